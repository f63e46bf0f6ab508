/** Small HTTP helpers for tests: a GraphQL POST that returns status, headers and parsed body. */
export interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: any;
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return toReply(response);
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<Reply> {
  return toReply(await fetch(url, { headers }));
}

export async function gql(url: string, query: string, variables?: Record<string, unknown>): Promise<Reply> {
  return post(url, variables ? { query, variables } : { query });
}

async function toReply(response: Response): Promise<Reply> {
  const text = await response.text();
  let json: unknown = undefined;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON (e.g. the landing page)
  }
  return { status: response.status, headers: response.headers, text, json };
}

export function baseUrl(graphqlUrl: string): string {
  return graphqlUrl.replace(/\/graphql$/, '');
}
