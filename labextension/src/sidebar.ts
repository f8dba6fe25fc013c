// The left-sidebar panel: launch form, Sparkmagic note, one card per appliance.
import { Widget } from '@lumino/widgets';

import { api, ApiError, ApplianceModel } from './api';
import { ApplianceCard } from './card';
import { ApplianceEvent, ApplianceEvents, ConnectionStatus } from './events';
import { ITabOpener } from './tabs';
import { Parameter, Templates } from './wire';

/** What the settings registry may override in the launch form (absent: the server's default). */
export interface LaunchDefaults {
  template?: string;
  backend?: string;
  workers?: number;
  workerCores?: number;
  workerMemory?: number;
  [parameter: string]: unknown;
}

export const DEFAULT_TEMPLATE = 'spark-livy';

/** The settings' camelCase keys name the templates' snake_case parameters. */
function settingFor(defaults: LaunchDefaults, parameter: string): unknown {
  const camel = parameter.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  return defaults[parameter] ?? defaults[camel];
}

function field(label: string, input: HTMLElement): HTMLElement {
  const row = document.createElement('label');
  row.className = 'jp-SparkAppliance-field';
  const text = document.createElement('span');
  text.textContent = label;
  row.append(text, input);
  return row;
}

function select(name: string, options: HTMLOptionElement[], value: string): HTMLSelectElement {
  const node = document.createElement('select');
  node.name = name;
  node.className = 'jp-mod-styled';
  node.append(...options);
  node.value = value;
  return node;
}

/** One input per template parameter, with the server's limits and default. */
function parameterInput(name: string, p: Parameter, value: unknown): HTMLInputElement | null {
  const input = document.createElement('input');
  input.name = name;
  input.className = 'jp-mod-styled';
  input.dataset.parameterType = p.type;
  if (p.type === 'integer' || p.type === 'number') {
    input.type = 'number';
    input.step = p.type === 'integer' ? '1' : 'any';
    if (p.minimum !== undefined) {
      input.min = String(p.minimum);
    }
    if (p.maximum !== undefined) {
      input.max = String(p.maximum);
    }
  } else if (p.type === 'string') {
    input.type = 'text';
  } else if (p.type === 'boolean') {
    input.type = 'checkbox';
    input.className = '';
    input.checked = Boolean(value);
    return input;
  } else {
    return null; // objects (images, Spark conf) are for JSON documents, not a form
  }
  input.value = String(value ?? '');
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
  private readonly fieldsNode: HTMLElement;
  private defaults: LaunchDefaults = {};
  private catalogue: Templates | null = null;

  constructor(private readonly tabs: ITabOpener | null = null) {
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
    this.statusNode.setAttribute('role', 'status');
    this.statusNode.dataset.connection = 'connecting';
    const launch = document.createElement('button');
    launch.className = 'jp-Button jp-mod-styled jp-mod-accept jp-SparkAppliance-launch';
    launch.textContent = 'Launch Spark cluster';
    launch.addEventListener('click', () => this.openForm());
    header.append(title, this.statusNode, launch);
    this.node.appendChild(header);

    this.fieldsNode = document.createElement('div');
    this.fieldsNode.className = 'jp-SparkAppliance-fields';
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
      status => this.showConnection(status)
    );
    this.events.connect();
    void this.loadTemplates();
  }

  /** The status line: empty while live; while not, what is being done about it (data-connection for tests). */
  private showConnection(status: ConnectionStatus): void {
    const node = this.statusNode;
    node.dataset.connection = status.state;
    if (status.state === 'backoff') {
      node.dataset.retry = String(status.retry);
      node.textContent = `reconnecting… (retry ${status.retry} in ${status.delayMs / 1000} s)`;
    } else {
      delete node.dataset.retry;
      node.textContent = status.state === 'open' ? '' : 'reconnecting…';
    }
  }

  setDefaults(defaults: LaunchDefaults): void {
    this.defaults = { ...defaults };
    this.renderFields();
  }

  /** The server's catalogue: templates, backends, limits (the slider's maximum too). */
  get templates(): Templates | null {
    return this.catalogue;
  }

  private buildForm(): HTMLFormElement {
    const form = document.createElement('form');
    form.className = 'jp-SparkAppliance-form';
    form.hidden = true;
    // The server validates and explains; the browser's own tooltips would hide its message.
    form.noValidate = true;
    form.appendChild(this.fieldsNode);
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
      this.catalogue = await api.templates();
      for (const card of this.cards.values()) {
        card.setMaxInstances(this.catalogue.max_instances);
      }
      this.renderFields();
    } catch (e) {
      this.showError(e instanceof ApiError ? e.describe() : String(e));
    }
  }

  /** Build the form from the catalogue: template and backend selects, one input per parameter. */
  private renderFields(chosen?: string): void {
    const catalogue = this.catalogue;
    if (!catalogue) {
      return;
    }
    const names = catalogue.templates.map(t => t.name);
    const wanted = chosen ?? (this.defaults.template as string | undefined) ?? DEFAULT_TEMPLATE;
    const template = catalogue.templates.find(t => t.name === wanted) ?? catalogue.templates[0];
    if (!template) {
      this.fieldsNode.replaceChildren();
      return;
    }
    const templateSelect = select('template', names.map(n => new Option(n, n)), template.name);
    templateSelect.title = template.description;
    templateSelect.addEventListener('change', () => this.renderFields(templateSelect.value));
    const backends = catalogue.backends.map(b => {
      const option = new Option(b.available ? b.name : `${b.name} (unavailable)`, b.name);
      option.disabled = !b.available;
      option.title = b.reason ?? '';
      return option;
    });
    const wantedBackend = (this.defaults.backend as string | undefined) ?? catalogue.default_backend;
    const usable = catalogue.backends.find(b => b.name === wantedBackend && b.available);
    const backendSelect = select('backend', backends, usable ? wantedBackend : catalogue.default_backend);
    const rows = [field('Template', templateSelect), field('Backend', backendSelect)];
    for (const [name, p] of Object.entries(template.parameters)) {
      const input = parameterInput(name, p, settingFor(this.defaults, name) ?? p.default);
      if (input) {
        rows.push(field(p.description, input));
      }
    }
    this.fieldsNode.replaceChildren(...rows);
  }

  private async submit(): Promise<void> {
    const body: { [key: string]: unknown } = {};
    for (const node of this.fieldsNode.querySelectorAll<HTMLInputElement | HTMLSelectElement>('input, select')) {
      const kind = node.dataset.parameterType;
      if (kind === 'boolean') {
        body[node.name] = (node as HTMLInputElement).checked;
      } else {
        body[node.name] = kind === 'integer' || kind === 'number' ? Number(node.value) : node.value;
      }
    }
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
      card = new ApplianceCard(model, text => this.showError(text), this.tabs);
      if (this.catalogue) {
        card.setMaxInstances(this.catalogue.max_instances);
      }
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
