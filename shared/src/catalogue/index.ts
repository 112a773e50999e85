export * from './types';
export * from './catalogue';
export * from './select';
export * from './flags';
export * from './kubelet-bootstrap';
export * from './kubelet-config';
export * from './health';
