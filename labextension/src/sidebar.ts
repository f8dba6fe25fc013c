// The left-sidebar panel: launch form, Sparkmagic note, one card per appliance.
import { Widget } from '@lumino/widgets';

import { api, ApiError, ApplianceModel } from './api';
import { ApplianceCard } from './card';
import { ApplianceEvent, ApplianceEvents } from './events';

export interface LaunchDefaults {
  template: string;
  backend: string;
  workers: number;
  workerCores: number;
  workerMemory: number;
}

export const DEFAULTS: LaunchDefaults = {
  template: 'spark-livy',
  backend: 'local',
  workers: 1,
  workerCores: 1,
  workerMemory: 1024
};

function field(label: string, input: HTMLElement): HTMLElement {
  const row = document.createElement('label');
  row.className = 'jp-SparkAppliance-field';
  const text = document.createElement('span');
  text.textContent = label;
  row.append(text, input);
  return row;
}

function numberInput(name: string, min: number, value: number): HTMLInputElement {
  const input = document.createElement('input');
  input.type = 'number';
  input.name = name;
  input.min = String(min);
  input.value = String(value);
  input.className = 'jp-mod-styled';
  return input;
}

export class ApplianceSidebar extends Widget {
  private readonly cards = new Map<string, ApplianceCard>();
  private readonly cardsNode: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly errorNode: HTMLElement;
  private readonly sparkmagicNode: HTMLElement;
  private readonly statusNode: HTMLElement;
  private readonly emptyNode: HTMLElement;
  private readonly events: ApplianceEvents;
  private defaults: LaunchDefaults = { ...DEFAULTS };

  constructor() {
    super();
    this.id = 'jp-spark-appliance-sidebar';
    this.addClass('jp-SparkAppliance-sidebar');
    this.title.caption = 'Spark appliances';

    const header = document.createElement('div');
    header.className = 'jp-SparkAppliance-header';
    const title = document.createElement('h2');
    title.textContent = 'Spark';
    this.statusNode = document.createElement('span');
    this.statusNode.className = 'jp-SparkAppliance-connection';
    const launch = document.createElement('button');
    launch.className = 'jp-Button jp-mod-styled jp-mod-accept jp-SparkAppliance-launch';
    launch.textContent = 'Launch Spark cluster';
    launch.addEventListener('click', () => this.openForm());
    header.append(title, this.statusNode, launch);
    this.node.appendChild(header);

    this.form = this.buildForm();
    this.node.appendChild(this.form);
    this.errorNode = document.createElement('pre');
    this.errorNode.className = 'jp-SparkAppliance-error';
    this.errorNode.hidden = true;
    this.node.appendChild(this.errorNode);
    this.sparkmagicNode = document.createElement('div');
    this.sparkmagicNode.className = 'jp-SparkAppliance-sparkmagic';
    this.node.appendChild(this.sparkmagicNode);
    this.emptyNode = document.createElement('p');
    this.emptyNode.className = 'jp-SparkAppliance-empty';
    this.emptyNode.textContent = 'No Spark cluster is running.';
    this.node.appendChild(this.emptyNode);
    this.cardsNode = document.createElement('div');
    this.cardsNode.className = 'jp-SparkAppliance-cards';
    this.node.appendChild(this.cardsNode);

    this.events = new ApplianceEvents(
      e => this.onEvent(e),
      () => void this.refresh(),
      ok => (this.statusNode.textContent = ok ? '' : 'reconnecting…')
    );
    this.events.connect();
    void this.loadTemplates();
  }

  setDefaults(defaults: Partial<LaunchDefaults>): void {
    this.defaults = { ...DEFAULTS, ...defaults };
    const f = this.form.elements as any;
    f.template.value = this.defaults.template;
    f.backend.value = this.defaults.backend;
    f.workers.value = String(this.defaults.workers);
    f.worker_cores.value = String(this.defaults.workerCores);
    f.worker_memory.value = String(this.defaults.workerMemory);
  }

  private buildForm(): HTMLFormElement {
    const form = document.createElement('form');
    form.className = 'jp-SparkAppliance-form';
    form.hidden = true;
    // The server validates and explains; the browser's own tooltips would hide its message.
    form.noValidate = true;
    const template = document.createElement('select');
    template.name = 'template';
    template.className = 'jp-mod-styled';
    template.appendChild(new Option(DEFAULTS.template, DEFAULTS.template));
    const backend = document.createElement('select');
    backend.name = 'backend';
    backend.className = 'jp-mod-styled';
    for (const b of ['local', 'docker']) {
      backend.appendChild(new Option(b, b));
    }
    form.append(
      field('Template', template),
      field('Backend', backend),
      field('Workers', numberInput('workers', 0, DEFAULTS.workers)),
      field('Cores per worker', numberInput('worker_cores', 1, DEFAULTS.workerCores)),
      field('Memory per worker (MB)', numberInput('worker_memory', 256, DEFAULTS.workerMemory))
    );
    const buttons = document.createElement('div');
    buttons.className = 'jp-SparkAppliance-formButtons';
    const submit = document.createElement('button');
    submit.type = 'submit';
    submit.className = 'jp-Button jp-mod-styled jp-mod-accept';
    submit.textContent = 'Launch';
    const cancel = document.createElement('button');
    cancel.type = 'button';
    cancel.className = 'jp-Button jp-mod-styled jp-mod-reject';
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => (form.hidden = true));
    buttons.append(cancel, submit);
    form.appendChild(buttons);
    form.addEventListener('submit', e => {
      e.preventDefault();
      void this.submit();
    });
    return form;
  }

  openForm(): void {
    this.form.hidden = false;
    this.showError('');
  }

  private async loadTemplates(): Promise<void> {
    try {
      const templates = await api.templates();
      const select = (this.form.elements as any).template as HTMLSelectElement;
      select.replaceChildren(...templates.map(t => new Option(t.name, t.name)));
      select.value = this.defaults.template;
    } catch (e) {
      this.showError(e instanceof ApiError ? e.describe() : String(e));
    }
  }

  private async submit(): Promise<void> {
    const f = this.form.elements as any;
    const body = {
      template: f.template.value,
      backend: f.backend.value,
      workers: Number(f.workers.value),
      worker_cores: Number(f.worker_cores.value),
      worker_memory: Number(f.worker_memory.value)
    };
    await this.launch(body);
  }

  async launch(body: object): Promise<ApplianceModel | null> {
    this.showError('');
    try {
      const model = await api.create(body);
      this.form.hidden = true;
      this.upsert(model);
      return model;
    } catch (e) {
      this.showError(e instanceof ApiError ? e.describe() : String(e));
      return null;
    }
  }

  showError(text: string): void {
    this.errorNode.textContent = text;
    this.errorNode.hidden = !text;
  }

  async refresh(): Promise<void> {
    try {
      const models = await api.list();
      const ids = new Set(models.map(m => m.id));
      for (const id of [...this.cards.keys()]) {
        if (!ids.has(id)) {
          this.drop(id);
        }
      }
      models.forEach(m => this.upsert(m));
    } catch (e) {
      this.showError(e instanceof ApiError ? e.describe() : String(e));
    }
  }

  get appliances(): ApplianceCard[] {
    return [...this.cards.values()];
  }

  card(id: string): ApplianceCard | undefined {
    return this.cards.get(id);
  }

  private onEvent(event: ApplianceEvent): void {
    if (event.type === 'deleted') {
      this.drop(event.id);
    } else if (event.appliance) {
      this.upsert(event.appliance);
    }
  }

  private upsert(model: ApplianceModel): void {
    let card = this.cards.get(model.id);
    if (!card) {
      card = new ApplianceCard(model, text => this.showError(text));
      this.cards.set(model.id, card);
      Widget.attach(card, this.cardsNode);
    } else {
      card.setModel(model);
    }
    this.renderSparkmagic();
  }

  private drop(id: string): void {
    const card = this.cards.get(id);
    if (card) {
      card.dispose();
      this.cards.delete(id);
    }
    this.renderSparkmagic();
  }

  private renderSparkmagic(): void {
    this.emptyNode.hidden = this.cards.size > 0;
    const wired = [...this.cards.values()]
      .map(c => c.appliance)
      .find(m => m.sparkmagic?.url);
    if (!wired?.sparkmagic) {
      this.sparkmagicNode.replaceChildren();
      return;
    }
    const sm = wired.sparkmagic;
    const line = document.createElement('div');
    line.textContent = `Sparkmagic → ${sm.url}`;
    line.className = 'jp-SparkAppliance-sparkmagicUrl';
    const note = document.createElement('div');
    note.className = 'jp-SparkAppliance-note';
    note.textContent = sm.error ?? sm.warning ?? 'Restart running Sparkmagic kernels to use it.';
    this.sparkmagicNode.replaceChildren(line, note);
  }

  dispose(): void {
    this.events.close();
    super.dispose();
  }
}
