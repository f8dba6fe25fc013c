// Main-area tabs: the Spark UI (and worker, application pages) in an IFrame, as
// dask-labextension shows its dashboards; a container's logs following new lines;
// the dependency graph at full size.
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { api } from './api';

/** What the panel needs from JupyterLab's shell to open a tab. */
export interface ITabOpener {
  /** A page of the Jupyter server (a path under its base URL) in a main-area tab. */
  openPage(url: string, title: string, key: string): void;
  /** A container's logs, polled while the tab is open. */
  openLogs(applianceId: string, container: string): void;
  /** The appliance's dependency graph, large. */
  openGraph(applianceId: string): void;
}

const LOG_POLL_MS = 1500;
const LOG_TAIL = 1000;

function tabId(key: string): string {
  return 'jp-SparkAppliance-tab-' + key.replace(/[^A-Za-z0-9_-]/g, '-');
}

/** The Spark UI, in an iframe of the same origin (its links stay under the Jupyter server's URL). */
export class SparkPage extends MainAreaWidget<IFrame> {
  constructor(url: string, title: string, key: string) {
    // Spark's pages run scripts and fetch its REST API (same origin: the Jupyter server).
    const content = new IFrame({ sandbox: ['allow-scripts', 'allow-same-origin', 'allow-forms', 'allow-downloads'] });
    content.referrerPolicy = 'same-origin';
    super({ content });
    this.id = tabId(key);
    this.addClass('jp-SparkAppliance-page');
    this.node.dataset.sparkPage = key;
    this.title.label = title;
    this.title.closable = true;
    this.load(url);
  }

  load(url: string): void {
    this.content.url = url;
    this.node.dataset.url = url;
  }
}

/** A container's logs: every instance's last lines, re-read while the tab is visible; follows the end. */
export class LogsView extends Widget {
  private timer = 0;
  private readonly pre: HTMLPreElement;

  constructor(
    readonly applianceId: string,
    readonly container: string
  ) {
    super();
    this.id = tabId(`logs-${applianceId}-${container}`);
    this.addClass('jp-SparkAppliance-logsTab');
    this.title.label = `Logs: ${applianceId}/${container}`;
    this.title.closable = true;
    this.node.style.overflow = 'auto';
    this.node.style.background = 'var(--jp-layout-color1)';
    this.pre = document.createElement('pre');
    this.pre.className = 'jp-SparkAppliance-logsText';
    this.pre.style.margin = '0';
    this.pre.style.padding = '8px';
    this.pre.style.fontFamily = 'var(--jp-code-font-family)';
    this.pre.style.fontSize = 'var(--jp-code-font-size)';
    this.pre.style.color = 'var(--jp-content-font-color1)';
    this.node.dataset.applianceId = applianceId;
    this.node.dataset.container = container;
    this.node.appendChild(this.pre);
    void this.poll();
  }

  private async poll(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    if (this.isVisible || !this.pre.textContent) {
      try {
        const logs = await api.logs(this.applianceId, this.container, LOG_TAIL);
        const text = logs.instances.map(i => `==> ${i.name} (${i.state}) <==\n${i.lines.join('\n')}`).join('\n\n');
        if (text !== this.pre.textContent) {
          const atEnd = this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 24;
          this.pre.textContent = text;
          if (atEnd) {
            this.node.scrollTop = this.node.scrollHeight; // follow new lines unless the user scrolled up
          }
        }
        this.node.dataset.lines = String(logs.instances.reduce((n, i) => n + i.lines.length, 0));
      } catch (e) {
        if (!this.pre.textContent) {
          this.pre.textContent = String(e);
        }
      }
    }
    this.timer = window.setTimeout(() => void this.poll(), LOG_POLL_MS);
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }
}

/** The dependency graph at the size of the tab (the sidebar's copy is small). */
export class GraphView extends Widget {
  constructor(readonly applianceId: string) {
    super();
    this.id = tabId(`graph-${applianceId}`);
    this.addClass('jp-SparkAppliance-graph');
    this.addClass('jp-SparkAppliance-graphTab');
    this.title.label = `Graph: ${applianceId}`;
    this.title.closable = true;
    this.node.style.overflow = 'auto';
    this.node.style.padding = '16px';
    this.node.style.background = 'var(--jp-layout-color1)';
    this.node.dataset.applianceId = applianceId;
    void this.refresh();
  }

  async refresh(): Promise<void> {
    const page = await api.graph(this.applianceId);
    const svg = page.match(/<svg[\s\S]*<\/svg>/);
    if (svg) {
      this.node.innerHTML = svg[0];
      const node = this.node.querySelector('svg');
      if (node) {
        node.style.width = '100%';
        node.style.height = 'auto';
        node.style.maxHeight = 'calc(100vh - 120px)';
      }
    }
  }
}

/** Opens (or re-activates) tabs in JupyterLab's main area. */
export class ShellTabs implements ITabOpener {
  constructor(
    private readonly add: (widget: Widget) => void,
    private readonly activate: (id: string) => void,
    private readonly find: (id: string) => Widget | undefined
  ) {}

  private reuse<T extends Widget>(id: string): T | undefined {
    const existing = this.find(id) as T | undefined;
    if (existing && !existing.isDisposed) {
      this.activate(id);
      return existing;
    }
    return undefined;
  }

  openPage(url: string, title: string, key: string): void {
    const existing = this.reuse<SparkPage>(tabId(key));
    if (existing) {
      existing.load(url);
      return;
    }
    const page = new SparkPage(url, title, key);
    this.add(page);
    this.activate(page.id);
  }

  openLogs(applianceId: string, container: string): void {
    if (this.reuse(tabId(`logs-${applianceId}-${container}`))) {
      return;
    }
    const view = new LogsView(applianceId, container);
    this.add(view);
    this.activate(view.id);
  }

  openGraph(applianceId: string): void {
    const existing = this.reuse<GraphView>(tabId(`graph-${applianceId}`));
    if (existing) {
      void existing.refresh();
      return;
    }
    const view = new GraphView(applianceId);
    this.add(view);
    this.activate(view.id);
  }
}
