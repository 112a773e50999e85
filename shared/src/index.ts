// The winston logger of ./log is left out, so that loading this module does not load winston.
// The controller imports it from '@kubetrust/shared/dist/log'.
export * from './catalogue';
export * from './files';
export * from './identity';
export * from './inventory';
export * from './kubeconfig';
export * from './line-logger';
export * from './logger';
export * from './pki';
export * from './rotation';
