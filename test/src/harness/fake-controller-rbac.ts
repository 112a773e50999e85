/**
 * The controller's RBAC objects in the form the fake API server can store.
 */
import { controllerRbacObjects, type ClusterRoleBindingObject } from '@kubetrust/controller/dist/kubelet-bootstrap';
import type { ClusterRole } from './fake-apiserver';

/**
 * Turns the controller's RBAC objects into ClusterRoles and ClusterRoleBindings, because the fake has
 * no Roles or RoleBindings. NOTE: the Secrets rule then applies in every namespace, so these tests
 * do not check that the Role keeps the controller out of other namespaces.
 */
export function controllerRbacForFake(): { roles: ClusterRole[]; bindings: ClusterRoleBindingObject[] } {
  const roles: ClusterRole[] = [];
  const bindings: ClusterRoleBindingObject[] = [];
  for (const object of controllerRbacObjects() as unknown as { kind: string; metadata: { name: string }; rules?: unknown; roleRef?: unknown; subjects?: unknown }[]) {
    const name = object.kind === 'Role' || object.kind === 'RoleBinding' ? `${object.metadata.name}:secrets` : object.metadata.name;
    if (object.kind === 'ClusterRole' || object.kind === 'Role') roles.push({ metadata: { name }, rules: object.rules } as ClusterRole);
    if (object.kind === 'ClusterRoleBinding' || object.kind === 'RoleBinding') {
      bindings.push({
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
        subjects: object.subjects,
      } as ClusterRoleBindingObject);
    }
  }
  return { roles, bindings };
}
