export * from './types';
export { API_VERSION, INVENTORY_DEFAULTS, KIND, loadInventory, parseInventory } from './parse';
export { DEFAULT_AGENT_PORT } from './nodes';
export { firstAddressOfCidr, normalizeIP, parseCidr, type Cidr, type CidrResult } from './net';
export { parseDuration } from './duration';
