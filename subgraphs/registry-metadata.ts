import type { Registry } from '../schema/types.js';

/** The `featureRegistry` field's value: the registry as analysts browse it. Built once; it never changes at run time. */
export function registryMetadata(registry: Registry) {
  return {
    entities: registry.entities.map((entity) => ({
      name: entity.name,
      typeName: entity.typeName,
      key: 'id',
      description: entity.description,
      views: entity.views.flatMap((view) =>
        view.versions.map((version) => ({
          name: view.name,
          version: version.version,
          active: version.active,
          ttlSeconds: view.ttlSeconds,
          owner: view.owner,
          description: view.description,
          tags: view.tags,
          source: view.source,
          features: version.features.map((f) => ({ name: f.name, type: f.typeName, description: f.description })),
        })),
      ),
    })),
  };
}
