import type { ChildProcess } from 'node:child_process';

/**
 * Sends `signal` to a child process and resolves once it has exited; with
 * `killAfterMs`, escalates to SIGKILL if it is still running by then.
 */
export async function signalAndWait(child: ChildProcess, signal: NodeJS.Signals, killAfterMs?: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  await exited;
  if (timer) clearTimeout(timer);
}
