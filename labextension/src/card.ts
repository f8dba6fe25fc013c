// One appliance: state, containers, endpoint links, worker slider, stop, logs, graph,
// and its running Spark applications with their jobs' progress.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { api, ApiError, ApplianceModel, ContainerModel } from './api';
import { ITabOpener } from './tabs';
import { Applications, MAX_INSTANCES, Progress, SparkApplication, SparkJob } from './wire';

export const WORKER_CONTAINER = 'spark-worker';
const LINK_LABELS: { [name: string]: string } = {
  'spark-ui': 'Spark UI',
  livy: 'Livy',
  'worker-ui': 'worker UI'
};
const APPS_POLL_MS = 1000;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: { [k: string]: string } = {},
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, v);
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

export function stateBadge(state: string): HTMLElement {
  return el('span', { class: `jp-SparkAppliance-state jp-SparkAppliance-state-${state}`, 'data-state': state }, state);
}

function progressBar(p: Progress, label: string): HTMLElement {
  const row = el('div', { class: 'jp-SparkAppliance-progress', 'data-progress': String(p.progress) });
  row.style.display = 'flex';
  row.style.alignItems = 'center';
  row.style.gap = '6px';
  const text = el('span', { class: 'jp-SparkAppliance-progressLabel' }, label);
  text.style.flex = '1 1 auto';
  text.style.overflow = 'hidden';
  text.style.textOverflow = 'ellipsis';
  text.style.whiteSpace = 'nowrap';
  const bar = el('span', { class: 'jp-SparkAppliance-bar', role: 'progressbar', 'aria-valuemin': '0',
    'aria-valuemax': String(p.tasks), 'aria-valuenow': String(p.done) });
  bar.style.flex = '0 0 40%';
  bar.style.height = '8px';
  bar.style.background = 'var(--jp-layout-color3)';
  bar.style.borderRadius = '4px';
  bar.style.overflow = 'hidden';
  const fill = el('span');
  fill.style.display = 'block';
  fill.style.height = '100%';
  fill.style.width = `${Math.round(p.progress * 100)}%`;
  fill.style.background = p.failed > 0 ? 'var(--jp-error-color1)' : 'var(--jp-brand-color1)';
  bar.appendChild(fill);
  const count = el('span', { class: 'jp-SparkAppliance-progressCount' }, `${p.done}/${p.tasks}`);
  count.style.color = 'var(--jp-ui-font-color2)';
  row.append(text, bar, count);
  return row;
}

export class ApplianceCard extends Widget {
  private model: ApplianceModel;
  private readonly slider: HTMLInputElement;
  private readonly sliderValue: HTMLElement;
  private readonly containersNode: HTMLElement;
  private readonly headerState: HTMLElement;
  private readonly message: HTMLElement;
  private readonly shortNode: HTMLElement;
  private readonly logsNode: HTMLPreElement;
  private readonly graphNode: HTMLElement;
  private readonly connectNode: HTMLElement;
  private readonly appsNode: HTMLElement;
  private pendingScale = false;
  private maxInstances = MAX_INSTANCES;
  private requested = -1;
  private appsTimer = 0;
  private appsBusy = false; // one request at a time: answers never arrive out of order

  constructor(
    model: ApplianceModel,
    private readonly onError: (text: string) => void,
    private readonly tabs: ITabOpener | null = null
  ) {
    super();
    this.model = model;
    this.addClass('jp-SparkAppliance-card');
    this.node.dataset.applianceId = model.id;

    const header = el('div', { class: 'jp-SparkAppliance-cardHeader' });
    header.appendChild(el('span', { class: 'jp-SparkAppliance-cardTitle' }, model.id));
    this.headerState = el('span');
    header.appendChild(this.headerState);
    const stop = el('button', { class: 'jp-Button jp-mod-styled jp-mod-warn jp-SparkAppliance-stop', title: 'Stop and remove' }, 'Stop');
    stop.addEventListener('click', () => void this.stop());
    header.appendChild(stop);
    this.node.appendChild(header);

    this.containersNode = el('div', { class: 'jp-SparkAppliance-containers' });
    this.node.appendChild(this.containersNode);

    const scale = el('label', { class: 'jp-SparkAppliance-scale' });
    scale.appendChild(el('span', {}, 'Workers '));
    this.slider = el('input', { type: 'range', min: '0', max: String(MAX_INSTANCES), step: '1', class: 'jp-SparkAppliance-slider' });
    this.sliderValue = el('span', { class: 'jp-SparkAppliance-sliderValue' });
    this.slider.addEventListener('input', () => (this.sliderValue.textContent = this.slider.value));
    // Scale on release only: 'change' fires once the user lets go.
    this.slider.addEventListener('change', () => void this.scale(Number(this.slider.value)));
    scale.append(this.slider, this.sliderValue);
    this.node.appendChild(scale);

    this.message = el('div', { class: 'jp-SparkAppliance-message' });
    this.node.appendChild(this.message);
    this.shortNode = el('div', { class: 'jp-SparkAppliance-short' });
    this.shortNode.hidden = true;
    this.node.appendChild(this.shortNode);
    this.connectNode = el('div', { class: 'jp-SparkAppliance-connect' });
    this.node.appendChild(this.connectNode);
    this.appsNode = el('div', { class: 'jp-SparkAppliance-apps' });
    this.node.appendChild(this.appsNode);
    this.graphNode = el('div', { class: 'jp-SparkAppliance-graph', title: 'Open the graph in a tab' });
    this.graphNode.style.cursor = 'pointer';
    this.graphNode.addEventListener('click', () => this.tabs?.openGraph(this.model.id));
    this.node.appendChild(this.graphNode);
    this.logsNode = el('pre', { class: 'jp-SparkAppliance-logs' });
    this.logsNode.hidden = true;
    this.node.appendChild(this.logsNode);
    this.setModel(model);
  }

  /** The server's cap (GET templates' max_instances): the slider's maximum. */
  setMaxInstances(max: number): void {
    this.maxInstances = max;
    this.slider.max = String(max);
  }

  get applianceId(): string {
    return this.model.id;
  }

  get appliance(): ApplianceModel {
    return this.model;
  }

  setModel(model: ApplianceModel): void {
    this.model = model;
    this.node.dataset.state = model.state;
    this.headerState.replaceChildren(stateBadge(model.state));
    this.containersNode.replaceChildren(...model.containers.map(c => this.renderContainer(c)));
    const worker = model.containers.find(c => c.id === WORKER_CONTAINER);
    const scale = this.slider.parentElement as HTMLElement;
    scale.hidden = !worker;
    if (worker) {
      const busy = worker.state === 'staging' || worker.state === 'pending' || worker.state === 'submitted';
      // The 202 carries the new desired count: the change is in flight until the workers converge.
      if (!busy && this.pendingScale && worker.instances === this.requested) {
        this.pendingScale = false;
      }
      this.slider.max = String(this.maxInstances);
      if (!this.pendingScale && document.activeElement !== this.slider) {
        this.slider.value = String(worker.instances);
        this.sliderValue.textContent = String(worker.instances);
      }
      this.slider.disabled = busy || this.pendingScale || model.state === 'failed' && worker.state !== 'failed';
    }
    this.message.textContent = model.reason ?? '';
    this.renderShort(worker);
    this.renderConnect();
    void this.refreshGraph();
    this.scheduleApps(0);
  }

  /** Statements wait for cores: say so (the gateway's words) and offer one more worker in one click. */
  private renderShort(worker: ContainerModel | undefined): void {
    const res = this.model.resources;
    this.shortNode.hidden = !res?.short;
    if (!res?.short) {
      this.shortNode.replaceChildren();
      return;
    }
    const text = el('span', { class: 'jp-SparkAppliance-shortText' },
      res.message ?? `${res.waiting_sessions} session(s) wait for cluster resources`);
    const nodes: HTMLElement[] = [text];
    if (worker && worker.instances < this.maxInstances) {
      const add = el('button', { class: 'jp-Button jp-mod-styled jp-mod-accept jp-SparkAppliance-addWorker' },
        'Add a worker');
      add.addEventListener('click', () => void this.scale(worker.instances + 1));
      nodes.push(add);
    }
    this.shortNode.replaceChildren(...nodes);
  }

  /** Spark Connect's address (never its token) and how to use it from a kernel. */
  private renderConnect(): void {
    const url = this.model.links['connect'];
    if (!url) {
      this.connectNode.replaceChildren();
      return;
    }
    const code = el('code', { class: 'jp-SparkAppliance-connectUrl' }, url);
    const hint = el('div', { class: 'jp-SparkAppliance-note' }, 'In a notebook: %spark_appliance connect');
    this.connectNode.replaceChildren(el('span', {}, 'Spark Connect '), code, hint);
  }

  /** Poll the running applications while the card is visible and the appliance runs. */
  private scheduleApps(delay: number): void {
    if (this.appsTimer || this.appsBusy || this.isDisposed) {
      return;
    }
    this.appsTimer = window.setTimeout(() => {
      this.appsTimer = 0;
      void this.refreshApps();
    }, delay);
  }

  private async refreshApps(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    const running = this.model.containers.some(c => c.role === 'spark-master' && c.state === 'running');
    if (!running) {
      this.appsNode.replaceChildren();
      return; // the next model (an event) schedules it again
    }
    if (this.isVisible) {
      this.appsBusy = true;
      try {
        this.renderApps(await api.applications(this.model.id));
      } catch {
        // the appliance went away or the server restarts: the next event says so
      } finally {
        this.appsBusy = false;
      }
    }
    this.scheduleApps(APPS_POLL_MS);
  }

  private renderApps(apps: Applications): void {
    const nodes: HTMLElement[] = [];
    if (apps.applications.length) {
      nodes.push(el('div', { class: 'jp-SparkAppliance-appsTitle' }, 'Applications'));
    }
    for (const a of apps.applications) {
      nodes.push(this.renderApp(a));
    }
    this.appsNode.replaceChildren(...nodes);
  }

  private renderApp(a: SparkApplication): HTMLElement {
    const node = el('div', { class: 'jp-SparkAppliance-app', 'data-app-id': a.id });
    node.style.margin = '4px 0';
    const head = el('div');
    const name = el('a', { class: 'jp-SparkAppliance-appLink', href: a.ui ?? '#', title: a.id }, a.name || a.id);
    name.addEventListener('click', e => {
      if (a.ui && this.tabs) {
        e.preventDefault();
        this.tabs.openPage(a.ui, a.name || a.id, `app-${this.model.id}-${a.id}`);
      }
    });
    head.append(name, el('span', { class: 'jp-SparkAppliance-count' }, ` ${a.cores} cores`));
    node.appendChild(head);
    for (const j of a.jobs) {
      node.appendChild(this.renderJob(a, j));
    }
    return node;
  }

  private renderJob(a: SparkApplication, j: SparkJob): HTMLElement {
    const node = el('div', { class: 'jp-SparkAppliance-job', 'data-job-id': String(j.id), 'data-status': j.status });
    node.style.marginLeft = '8px';
    node.appendChild(progressBar(j.progress, `Job ${j.id} ${j.status.toLowerCase()}: ${j.name}`));
    for (const s of j.stages) {
      const stage = el('div', { class: 'jp-SparkAppliance-stage', 'data-stage-id': String(s.id) });
      stage.style.marginLeft = '12px';
      stage.appendChild(progressBar(s.progress, `Stage ${s.id}: ${s.name}`));
      node.appendChild(stage);
    }
    return node;
  }

  protected onAfterShow(): void {
    this.scheduleApps(0);
  }

  dispose(): void {
    window.clearTimeout(this.appsTimer);
    super.dispose();
  }

  private renderContainer(c: ContainerModel): HTMLElement {
    const row = el('div', { class: 'jp-SparkAppliance-container', 'data-container-id': c.id, 'data-state': c.state });
    const running = c.instance_states.filter(i => i.state === 'running').length;
    row.appendChild(el('span', { class: 'jp-SparkAppliance-containerName' }, c.id));
    row.appendChild(stateBadge(c.state));
    row.appendChild(el('span', { class: 'jp-SparkAppliance-count' }, `${running}/${c.instances}`));
    const links = el('span', { class: 'jp-SparkAppliance-links' });
    const seen = new Set<string>();
    for (const ep of c.endpoints) {
      // Through the Jupyter server (ep.ui) wherever it can; a raw host:port only for what has no proxy.
      const href = ep.ui ?? (ep.url?.startsWith('http') ? ep.url : undefined);
      if (!href || seen.has(href)) {
        continue;
      }
      seen.add(href);
      let label = LINK_LABELS[ep.name ?? ''] ?? ep.name ?? href;
      if (ep.name === 'worker-ui') {
        label = `worker ${ep.instance ?? 0}`;
      }
      const a = el('a', { href, target: '_blank', rel: 'noopener', class: 'jp-SparkAppliance-link',
        'data-endpoint': ep.name ?? '' }, label);
      const ui = ep.ui;
      if (ui && this.tabs && ep.name !== 'livy') {
        a.addEventListener('click', e => {
          e.preventDefault();
          this.tabs?.openPage(ui, `${label}: ${this.model.id}`, `${ep.name}-${this.model.id}-${ep.instance ?? 0}`);
        });
      }
      links.appendChild(a);
    }
    row.appendChild(links);
    const logs = el('button', { class: 'jp-Button jp-mod-minimal jp-SparkAppliance-logsButton', title: `Logs of ${c.id}` }, 'logs');
    logs.addEventListener('click', () => (this.tabs ? this.tabs.openLogs(this.model.id, c.id) : void this.showLogs(c.id)));
    row.appendChild(logs);
    return row;
  }

  async scale(n: number): Promise<void> {
    this.pendingScale = true;
    this.requested = n;
    this.slider.disabled = true;
    try {
      this.setModel(await api.scale(this.model.id, WORKER_CONTAINER, n));
    } catch (e) {
      this.pendingScale = false;
      this.slider.disabled = false;
      this.onError(e instanceof ApiError ? e.describe() : String(e));
    }
  }

  async stop(confirm = true): Promise<void> {
    if (confirm) {
      const result = await showDialog({
        title: `Stop ${this.model.id}?`,
        body: 'Every container of this appliance is stopped and removed.',
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop' })]
      });
      if (!result.button.accept) {
        return;
      }
    }
    this.message.textContent = 'stopping…';
    try {
      await api.remove(this.model.id);
    } catch (e) {
      this.onError(e instanceof ApiError ? e.describe() : String(e));
    }
  }

  private async showLogs(container: string): Promise<void> {
    if (!this.logsNode.hidden && this.logsNode.dataset.container === container) {
      this.logsNode.hidden = true;
      return;
    }
    const logs = await api.logs(this.model.id, container, 200);
    this.logsNode.dataset.container = container;
    this.logsNode.textContent = logs.instances
      .map(i => `==> ${i.name} (${i.state}) <==\n${i.lines.join('\n')}`)
      .join('\n\n');
    this.logsNode.hidden = false;
  }

  private async refreshGraph(): Promise<void> {
    const page = await api.graph(this.model.id);
    const svg = page.match(/<svg[\s\S]*<\/svg>/);
    if (svg) {
      this.graphNode.innerHTML = svg[0];
    }
  }
}
