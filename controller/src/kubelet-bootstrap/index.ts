// Kubelet TLS bootstrapping on the controller side: tokens, bindings, serving CSR approval and the API client.
export * from './types';
export * from './token';
export * from './bootstrap-kubeconfig';
export * from './client';
export * from './bindings';
export * from './serving-approval';
export * from './serving-approver';
export * from './tokens';
export * from './controller-identity';
export { createKubeClient, createKubeClientFromText } from './client-node';
