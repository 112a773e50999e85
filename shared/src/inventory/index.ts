export * from './types';
export { API_VERSION, INVENTORY_DEFAULTS, KIND, loadInventory, parseInventory, type InventoryOptions } from './parse';
export { DEFAULT_AGENT_PREFIX, DEFAULT_KNOWN_HOSTS_FILE, DEFAULT_SSH_PORT, DEFAULT_SSH_USER } from './ssh';
export { DEFAULT_AGENT_PORT } from './nodes';
export { firstAddressOfCidr, normalizeIP, parseCidr, type Cidr, type CidrResult } from './net';
export { parseDuration } from './duration';
