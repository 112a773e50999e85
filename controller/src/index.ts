export * from './agent-client';
export * from './authority';
export * from './distribute';
export * from './enroll';
export * from './init';
export * from './plan';
export * from './report';
export * from './state-dir';
export { runController, EXIT_FAILED, EXIT_INVALID } from './cli';
