import { loadConfig } from '../runtime/config.js';
import { log } from '../runtime/log.js';
import { runUntilSignal } from '../runtime/process.js';
import { loadRegistry } from '../schema/registry.js';
import { openStore, type OpenedStore } from '../store/bootstrap.js';
import { startGateway } from './server.js';

/**
 * `npm start`: the gateway. Without SUBGRAPH_URLS the subgraphs run in this
 * process on the configured store (embedded and seeded with demo data by
 * default); with SUBGRAPH_URLS it plans over the subgraph processes.
 */
await runUntilSignal(async () => {
  const config = loadConfig();
  const registry = loadRegistry(config.registryFile);
  const distributed = Object.keys(config.subgraphUrls).length > 0;
  const opened: OpenedStore | undefined = distributed ? undefined : await openStore(config, registry);
  const gateway = await startGateway({ config, registry, store: opened?.store });
  log.info(
    { url: gateway.url, shape: distributed ? 'distributed' : 'co-located', store: opened?.store.kind ?? 'in subgraphs', safelist: config.safelist },
    'feature gateway listening',
  );
  if (process.stdout.isTTY || process.env.npm_lifecycle_event === 'start') {
    console.error(`\n  Feature gateway ready at ${gateway.url}  (open it in a browser for Apollo Sandbox)\n`);
  }
  return async () => {
    await gateway.close();
    await opened?.close();
  };
});
