/**
 * A one-line live progress display for a terminal: rollout step and phase, counts, the nodes being
 * changed and the elapsed time, redrawn in place. Without a terminal the CLI logs one line per node
 * instead.
 */
import type { WriteStream } from 'node:tty';
import type { RolloutPosition } from './rollout';

export class LiveProgress {
  private readonly startedAt = Date.now();
  private readonly active = new Set<string>();
  private done = 0;
  private total = 0;
  private position: RolloutPosition | undefined;
  private steps = 0;
  private lastLine = '';

  constructor(
    private readonly stream: WriteStream,
    private readonly label: string,
  ) {}

  /** Records a node starting or finishing its change and redraws the line. */
  update(event: { node: string; phase: 'start' | 'done'; done?: number; total?: number; position?: RolloutPosition; steps?: number }): void {
    if (event.phase === 'start') this.active.add(event.node);
    else this.active.delete(event.node);
    if (event.phase === 'start' && event.position !== undefined) this.position = event.position;
    if (event.steps !== undefined) this.steps = event.steps;
    if (event.done !== undefined) this.done = event.done;
    if (event.total !== undefined) this.total = event.total;
    this.draw();
  }

  private draw(): void {
    const elapsed = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    const counts = this.total > 0 ? `${this.done}/${this.total} nodes done` : 'planning';
    const step = this.position === undefined ? '' : `step ${this.position.step}/${this.steps} (${this.position.phase}) · `;
    const working = this.active.size > 0 ? ` · changing ${[...this.active].slice(0, 3).join(', ')}${this.active.size > 3 ? ', …' : ''}` : '';
    const line = `${this.label}: ${step}${counts}${working} · ${elapsed} s`;
    const width = this.stream.columns > 0 ? this.stream.columns - 1 : 100;
    this.lastLine = line.length > width ? `${line.slice(0, width - 1)}…` : line;
    this.stream.write(`\r\x1b[K${this.lastLine}`);
  }

  /** Clears the line so that the report starts on a clean one. */
  finish(): void {
    if (this.lastLine !== '') this.stream.write('\r\x1b[K');
  }
}
