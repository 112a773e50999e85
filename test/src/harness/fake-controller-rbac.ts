/**
 * The controller's RBAC objects in the form the fake API server can store, and a fake API server
 * set up for the controller's commands.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { controllerRbacObjects, createKubeClient, type ClusterRoleBindingObject, type KubeClient } from '@kubetrust/controller/dist/kubelet-bootstrap';
import { FakeApiServer, type ClusterRole } from './fake-apiserver';
import { createFakeClusterPki, writeKubeconfigFile, type FakeClusterPki } from './fake-cluster';

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

/** A fake API server for the controller's commands, with the cluster PKI it serves and an admin client. */
export interface ControllerApiFixture {
  readonly pki: FakeClusterPki;
  readonly server: FakeApiServer;
  readonly admin: KubeClient;
}

/**
 * Starts a fake API server on `host` that signs kubelet CSRs with a new cluster CA, binds the
 * controller's RBAC through an admin kubeconfig written into `workDir`, and copies the cluster CA
 * into `<stateDir>/pki`, where `controller init` keeps it, so `controller kube-credentials` can run.
 */
export async function startControllerApi(host: string, workDir: string, stateDir: string): Promise<ControllerApiFixture> {
  const pki = await createFakeClusterPki(host);
  const rbac = controllerRbacForFake();
  const server = await FakeApiServer.start({
    host,
    port: 0,
    servingCertificatePem: pki.apiserver.certificatePem,
    servingKeyPem: pki.apiserver.keyPem,
    clientCaPem: pki.ca.certificatePem,
    signingCa: { certificatePem: pki.ca.certificatePem, privateKeyPem: pki.ca.keyPem },
    clusterRoles: rbac.roles,
  });
  const adminFile = path.join(workDir, 'admin.conf');
  writeKubeconfigFile(adminFile, server.url, pki.ca.certificatePem, 'kubernetes-admin', await pki.issueClientCertificate('kubernetes-admin', ['system:masters']));
  const admin = await createKubeClient(adminFile);
  for (const binding of rbac.bindings) await admin.createClusterRoleBinding(binding);

  fs.mkdirSync(path.join(stateDir, 'pki'), { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(stateDir, 'pki', 'cluster-ca.crt'), pki.ca.certificatePem);
  fs.writeFileSync(path.join(stateDir, 'pki', 'cluster-ca.key'), pki.ca.keyPem, { mode: 0o600 });
  return { pki, server, admin };
}
