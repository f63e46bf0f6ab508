import { Kind, type GraphQLResolveInfo, type SelectionSetNode } from 'graphql';

/**
 * Names of the fields selected directly on an object of `typeName` by the
 * field being resolved, looking through inline fragments and fragment
 * spreads (the query planner sends both). Directives are ignored, so a
 * field under @skip counts as selected: at worst one read too many.
 */
export function selectedFieldNames(info: GraphQLResolveInfo, typeName: string): Set<string> {
  const names = new Set<string>();
  const visited = new Set<string>();
  const walk = (set: SelectionSetNode | undefined): void => {
    if (!set) return;
    for (const selection of set.selections) {
      switch (selection.kind) {
        case Kind.FIELD:
          names.add(selection.name.value);
          break;
        case Kind.INLINE_FRAGMENT:
          if (!selection.typeCondition || selection.typeCondition.name.value === typeName) walk(selection.selectionSet);
          break;
        case Kind.FRAGMENT_SPREAD: {
          const name = selection.name.value;
          const fragment = info.fragments[name];
          if (fragment && !visited.has(name) && fragment.typeCondition.name.value === typeName) {
            visited.add(name);
            walk(fragment.selectionSet);
          }
          break;
        }
      }
    }
  };
  for (const node of info.fieldNodes) walk(node.selectionSet);
  return names;
}
