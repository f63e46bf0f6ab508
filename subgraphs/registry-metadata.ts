import { featureServiceOperation } from '../schema/feature-queries.js';
import type { Registry } from '../schema/types.js';

/** The `featureRegistry` field's value: the registry as analysts browse it. Built once; it never changes at run time. */
export function registryMetadata(registry: Registry) {
  return {
    entities: registry.entities.map((entity) => ({
      name: entity.name,
      typeName: entity.typeName,
      key: 'id',
      feastJoinKey: entity.feastJoinKey,
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
    featureServices: registry.featureServices.map((service) => {
      const operation = featureServiceOperation(registry, service);
      return {
        name: service.name,
        description: service.description,
        owner: service.owner,
        features: service.features.map((f) => `${f.version.viewName}@v${f.version.version}:${f.feature.name}`),
        operationName: operation.name,
        operationId: operation.id,
        query: operation.body,
      };
    }),
  };
}
