// jupyter-spark-appliance: the sidebar panel, its commands, launcher tile and settings.
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { WORKER_CONTAINER } from './card';
import { ApplianceSidebar, DEFAULT_TEMPLATE, LaunchDefaults } from './sidebar';
import { ShellTabs } from './tabs';

const PLUGIN_ID = 'jupyter-spark-appliance:plugin';
const CATEGORY = 'Spark';

namespace CommandIDs {
  export const launch = 'spark-appliance:launch';
  export const stop = 'spark-appliance:stop';
  export const scale = 'spark-appliance:scale';
  export const open = 'spark-appliance:open';
}

const sparkIcon = new LabIcon({
  name: 'jupyter-spark-appliance:spark',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" ' +
    'd="M12 2l2.4 6.6L21 9l-5.2 4.2L17.6 20 12 16.3 6.4 20l1.8-6.8L3 9l6.6-.4z"/></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Launch, watch, scale and stop Spark clusters (with Livy for Sparkmagic).',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ILauncher, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    settings: ISettingRegistry | null
  ) => {
    // Spark UI pages, logs and the graph open as main-area tabs (as dask-labextension's dashboards).
    const tabs = new ShellTabs(
      widget => app.shell.add(widget, 'main'),
      id => app.shell.activateById(id),
      id => {
        for (const w of app.shell.widgets('main')) {
          if (w.id === id) {
            return w;
          }
        }
        return undefined;
      }
    );
    const sidebar = new ApplianceSidebar(tabs);
    sidebar.title.icon = sparkIcon;
    app.shell.add(sidebar, 'left', { rank: 250 });
    restorer?.add(sidebar, sidebar.id);

    const pick = async (id?: string): Promise<string | null> => {
      const ids = sidebar.appliances.map(c => c.applianceId);
      if (id) {
        return id;
      }
      if (ids.length <= 1) {
        return ids[0] ?? null;
      }
      const result = await InputDialog.getItem({ title: 'Which appliance?', items: ids });
      return result.button.accept ? result.value : null;
    };

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show Spark appliances',
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.launch, {
      label: args => (args.isLauncher ? 'Spark cluster' : 'Launch Spark cluster'),
      caption: 'Launch a Spark master, workers and a Livy endpoint',
      icon: args => (args.isPalette ? undefined : sparkIcon),
      execute: async args => {
        app.shell.activateById(sidebar.id);
        if (args.workers !== undefined || args.template !== undefined) {
          const { isPalette, isLauncher, ...body } = args; // eslint-disable-line @typescript-eslint/no-unused-vars
          return sidebar.launch({ template: DEFAULT_TEMPLATE, ...body });
        }
        sidebar.openForm();
        return null;
      }
    });
    app.commands.addCommand(CommandIDs.stop, {
      label: 'Stop Spark cluster',
      execute: async args => {
        const id = await pick(args.id as string | undefined);
        const card = id ? sidebar.card(id) : undefined;
        await card?.stop(args.confirm !== false);
      }
    });
    app.commands.addCommand(CommandIDs.scale, {
      label: 'Scale Spark workers',
      execute: async args => {
        const id = await pick(args.id as string | undefined);
        const card = id ? sidebar.card(id) : undefined;
        if (!card) {
          return;
        }
        let workers = args.workers as number | undefined;
        if (workers === undefined) {
          const current = card.appliance.containers.find(c => c.id === WORKER_CONTAINER)?.instances ?? 1;
          const result = await InputDialog.getNumber({ title: `Workers for ${id}`, value: current });
          if (!result.button.accept || result.value === null) {
            return;
          }
          workers = result.value;
        }
        await card.scale(workers);
      }
    });

    for (const command of [CommandIDs.launch, CommandIDs.stop, CommandIDs.scale, CommandIDs.open]) {
      palette?.addItem({ command, category: CATEGORY, args: { isPalette: true } });
    }
    launcher?.add({ command: CommandIDs.launch, category: 'Other', rank: 1, args: { isLauncher: true } });

    if (settings) {
      void settings.load(PLUGIN_ID).then(loaded => {
        const apply = () => sidebar.setDefaults(loaded.composite as LaunchDefaults);
        loaded.changed.connect(apply);
        apply();
      });
    }
  }
};

export default plugin;
