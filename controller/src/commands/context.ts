import type { Command, Option } from 'commander';
import type { Inventory } from '@kubetrust/shared/dist/inventory';
import type { Logger } from '@kubetrust/shared/dist/log';

/** Services the CLI entry point hands every command: logging, the inventory reader and exit conventions. */
export interface CommandContext {
  loggerFor(command: Command): Logger;
  readInventory(file: string, logger: Logger): Inventory;
  outputOption(): Option;
  /** Builds the error that the CLI reports as invalid input, with exit code 2. */
  invalidInput(message: string): Error;
  /** Exit code for a run that completed and found or caused a failure. */
  readonly exitFailed: number;
}
