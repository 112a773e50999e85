/**
 * Command-line helpers that the controller and agent CLIs share. Both build their commands with
 * commander, which this module uses through the objects passed in and never loads itself.
 */
import type { Command, Option } from 'commander';

/**
 * Adds "(required)" to the help of every required option below `program`, which commander's help
 * leaves unmarked, and checks for missing required options only after unknown options. Commander
 * checks required options first, so a misspelled `--state-dri` was reported as a missing
 * `--state-dir` instead of as an unknown option with a suggestion.
 */
export function checkRequiredOptionsLast(program: Command): void {
  const required = new Map<Command, Option[]>();
  const visit = (command: Command): void => {
    const options = command.options.filter((option) => option.mandatory);
    for (const option of options) {
      if (!option.description.endsWith('(required)')) option.description = `${option.description} (required)`;
      option.mandatory = false;
    }
    if (options.length > 0) required.set(command, options);
    for (const subcommand of command.commands) visit(subcommand);
  };
  visit(program);
  // Commander runs the program's preAction hooks for every command's action, after it has
  // rejected unknown options and before the action.
  program.hook('preAction', (_program, actionCommand) => {
    for (let command: Command | null = actionCommand; command !== null; command = command.parent) {
      for (const option of required.get(command) ?? []) {
        if (command.getOptionValue(option.attributeName()) === undefined) {
          actionCommand.error(`error: required option '${option.flags}' not specified`, { code: 'commander.missingMandatoryOptionValue' });
        }
      }
    }
  });
}
