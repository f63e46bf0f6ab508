import fs from 'node:fs';
import { buildManifest, defaultManifestFile } from './manifest.js';

/** `npm run manifest`: regenerates schema/persisted-query-manifest.json from schema/operations/*.graphql. */
const manifest = buildManifest();
fs.writeFileSync(defaultManifestFile, JSON.stringify(manifest, null, 2) + '\n');
console.log(JSON.stringify({ msg: 'wrote persisted-query manifest', file: defaultManifestFile, operations: manifest.operations.map((o) => o.name) }));
