// REST client for the server extension: the wire shape mirrors model.py.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

// The wire shapes are generated from the server's one definition (wire.py).
import type { Applications, Appliance, Container, Endpoint, InstanceState, Logs, Problem, Template, Templates } from './wire';

export type { Endpoint, InstanceState, Problem, Templates };
export type ContainerModel = Container;
export type ApplianceModel = Appliance;
export type TemplateModel = Template;

/** An error from the server, with the spec problems it named (if any). */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly problems: Problem[] = []
  ) {
    super(message);
  }

  describe(): string {
    const lines = [this.message];
    for (const p of this.problems) {
      lines.push(`${p.path}: ${p.message}`);
    }
    return lines.join('\n');
  }
}

export function apiUrl(...parts: string[]): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'spark-appliance', ...parts);
}

export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(apiUrl(path), init, settings);
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(data?.message ?? response.statusText, response.status, data?.problems ?? []);
  }
  return data as T;
}

export const api = {
  list: () => requestAPI<{ appliances: ApplianceModel[] }>('appliance').then(r => r.appliances),
  templates: () => requestAPI<Templates>('templates'),
  create: (body: object) =>
    requestAPI<ApplianceModel>('appliance', { method: 'POST', body: JSON.stringify(body) }),
  remove: (id: string) => requestAPI<null>(`appliance/${id}`, { method: 'DELETE' }),
  scale: (id: string, container: string, instances: number) =>
    requestAPI<ApplianceModel>(`appliance/${id}/container/${container}`, {
      method: 'PATCH',
      body: JSON.stringify({ instances })
    }),
  applications: (id: string) => requestAPI<Applications>(`appliance/${id}/applications`),
  logs: (id: string, container: string, tail = 200) =>
    requestAPI<Logs>(`appliance/${id}/container/${container}/logs?tail=${tail}`),
  graph: async (id: string): Promise<string> => {
    const settings = ServerConnection.makeSettings();
    const response = await ServerConnection.makeRequest(apiUrl(`appliance/${id}/ui`), {}, settings);
    return response.ok ? response.text() : '';
  }
};
