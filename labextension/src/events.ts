// Live updates from the server's events route (server-sent events).
// EventSource reconnects by itself when a stream ends (the server ends them on
// purpose every event_stream_seconds); we re-read the list on every (re)open so
// nothing missed while disconnected stays stale.
import { apiUrl, ApplianceModel } from './api';

export interface ApplianceEvent {
  type: 'snapshot' | 'update' | 'deleted';
  id: string;
  state: string;
  appliance?: ApplianceModel;
}

/**
 * Where the live updates stand, for the panel's status line:
 * - open: a stream is connected;
 * - reconnecting: the stream ended and the browser's EventSource is retrying by itself;
 * - backoff: the browser gave up (a reconnect got a non-200 answer, e.g. the hub proxy's
 *   503 while the single-user server restarts) and our timer opens a new one in delayMs.
 */
export type ConnectionStatus =
  | { state: 'open' }
  | { state: 'reconnecting' }
  | { state: 'backoff'; retry: number; delayMs: number };

/** The longest wait between two of our own attempts: 500 ms * 2^6 = 32 s. */
export const MAX_RETRY = 6;

export class ApplianceEvents {
  private source: EventSource | null = null;
  private retry = 0;
  private timer: number | null = null;

  constructor(
    private readonly onEvent: (event: ApplianceEvent) => void,
    private readonly onOpen: () => void,
    private readonly onStatus: (status: ConnectionStatus) => void
  ) {}

  connect(): void {
    this.close();
    const source = new EventSource(apiUrl('events'), { withCredentials: true });
    this.source = source;
    const handle = (e: MessageEvent) => this.onEvent(JSON.parse(e.data));
    for (const kind of ['snapshot', 'update', 'deleted']) {
      source.addEventListener(kind, handle as EventListener);
    }
    source.onopen = () => {
      this.retry = 0; // a success resets the back-off
      this.onStatus({ state: 'open' });
      this.onOpen();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up for good (a non-200 answer or a wrong content type: a hub
        // proxy's 502/503, a 403 after a server restart): back off, capped, and retry.
        this.retry = Math.min(this.retry + 1, MAX_RETRY);
        const delayMs = 500 * 2 ** this.retry;
        this.onStatus({ state: 'backoff', retry: this.retry, delayMs });
        this.timer = window.setTimeout(() => this.connect(), delayMs);
      } else {
        this.onStatus({ state: 'reconnecting' });
      }
    };
  }

  close(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    this.source?.close();
    this.source = null;
  }
}
