import { ApolloGateway, IntrospectAndCompose } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { parseArgs } from 'node:util';

/**
 * Baseline "stock": @apollo/gateway over HTTP to the stock subgraphs, as in
 * the Apollo docs (IntrospectAndCompose, startStandaloneServer, defaults).
 *
 *   node dist/loadtest/baselines/stock-gateway.js --port 4300 --subgraphs user=http://127.0.0.1:4301/,item=…
 */
const { values } = parseArgs({ options: { port: { type: 'string' }, subgraphs: { type: 'string' } } });
const subgraphs = (values.subgraphs ?? '').split(',').filter(Boolean).map((pair) => {
  const [name, url] = pair.split('=');
  return { name: name!, url: url! };
});
const server = new ApolloServer({ gateway: new ApolloGateway({ supergraphSdl: new IntrospectAndCompose({ subgraphs }) }) });
const { url } = await startStandaloneServer(server, { listen: { port: Number(values.port), host: '127.0.0.1' } });
console.log(JSON.stringify({ msg: 'stock gateway listening', url }));
