export * from './catalogue';
export * from './files';
export * from './identity';
export * from './inventory';
export * from './kubeconfig';
export * from './log';
export * from './pki';
export * from './rotation';
