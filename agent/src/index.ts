export * from './config';
export * from './server';
export { AGENT_VERSION } from './version';
export * from './enroll';
