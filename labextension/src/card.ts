// One appliance: state, containers, endpoint links, worker slider, stop, logs, graph.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { api, ApiError, ApplianceModel, ContainerModel } from './api';
import { MAX_INSTANCES } from './wire';

export const WORKER_CONTAINER = 'spark-worker';
const LINK_LABELS: { [name: string]: string } = {
  'spark-ui': 'Spark UI',
  livy: 'Livy',
  'worker-ui': 'worker UI'
};

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

export class ApplianceCard extends Widget {
  private model: ApplianceModel;
  private readonly slider: HTMLInputElement;
  private readonly sliderValue: HTMLElement;
  private readonly containersNode: HTMLElement;
  private readonly headerState: HTMLElement;
  private readonly message: HTMLElement;
  private readonly logsNode: HTMLPreElement;
  private readonly graphNode: HTMLElement;
  private pendingScale = false;
  private maxInstances = MAX_INSTANCES;
  private requested = -1;

  constructor(model: ApplianceModel, private readonly onError: (text: string) => void) {
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
    this.graphNode = el('div', { class: 'jp-SparkAppliance-graph' });
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
    void this.refreshGraph();
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
      if (ep.url && !seen.has(ep.url) && c.id !== WORKER_CONTAINER) {
        seen.add(ep.url);
        const a = el('a', { href: ep.url, target: '_blank', rel: 'noopener', class: 'jp-SparkAppliance-link' },
          LINK_LABELS[ep.name ?? ''] ?? ep.name ?? ep.url);
        links.appendChild(a);
      }
    }
    row.appendChild(links);
    const logs = el('button', { class: 'jp-Button jp-mod-minimal jp-SparkAppliance-logsButton', title: `Logs of ${c.id}` }, 'logs');
    logs.addEventListener('click', () => void this.showLogs(c.id));
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
