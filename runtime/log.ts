import { pino, type Logger } from 'pino';

/** One JSON line per event on stdout; `LOG_LEVEL` picks the threshold. */
export const log: Logger = pino({
  level: process.env.LOG_LEVEL ?? 'info',
  base: { pid: process.pid, service: process.env.SERVICE_NAME ?? 'feature-gateway' },
  timestamp: pino.stdTimeFunctions.isoTime,
});

export type { Logger };
