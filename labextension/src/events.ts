// Live updates from the server's events route (server-sent events).
// EventSource reconnects by itself; we re-read the list on every (re)open so
// nothing missed while disconnected stays stale.
import { apiUrl, ApplianceModel } from './api';

export interface ApplianceEvent {
  type: 'snapshot' | 'update' | 'deleted';
  id: string;
  state: string;
  appliance?: ApplianceModel;
}

export class ApplianceEvents {
  private source: EventSource | null = null;
  private retry = 0;

  constructor(
    private readonly onEvent: (event: ApplianceEvent) => void,
    private readonly onOpen: () => void,
    private readonly onStatus: (connected: boolean) => void
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
      this.retry = 0;
      this.onStatus(true);
      this.onOpen();
    };
    source.onerror = () => {
      this.onStatus(false);
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a 403 after a server restart): back off and retry.
        this.retry = Math.min(this.retry + 1, 6);
        window.setTimeout(() => this.connect(), 500 * 2 ** this.retry);
      }
    };
  }

  close(): void {
    this.source?.close();
    this.source = null;
  }
}
