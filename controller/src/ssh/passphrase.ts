/**
 * Asks for a private key's passphrase on the terminal, without echo, one prompt at a time even
 * when several nodes connect in parallel. Without a terminal it fails at once, so that a run under
 * CI or cron never waits for input.
 */
import * as readline from 'node:readline';
import { Writable } from 'node:stream';

let queue: Promise<unknown> = Promise.resolve();

function ask(node: string): Promise<string> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    return Promise.reject(new Error(`the private key for node ${node} is encrypted and there is no terminal to ask for its passphrase; set ssh.passphraseEnv in the inventory to the name of an environment variable that holds it`));
  }
  let muted = false;
  const output = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (!muted) process.stderr.write(chunk);
      callback();
    },
  });
  const prompt = readline.createInterface({ input: process.stdin, output, terminal: true });
  return new Promise((resolve) => {
    prompt.question(`Passphrase for the SSH key of ${node}: `, (answer) => {
      prompt.close();
      process.stderr.write('\n');
      resolve(answer);
    });
    muted = true;
  });
}

/** Prompts for the passphrase of the key used to reach `node`. */
export function passphrasePrompt(node: string): Promise<string> {
  const answer = queue.then(() => ask(node));
  queue = answer.catch(() => undefined);
  return answer;
}
