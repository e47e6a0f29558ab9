// The console's flow in headless Chromium against a running `quarry serve`, driven by the
// integration test `console::` (tests/it/console.rs), which sets up the server and sources
// and passes them in the environment:
//   QUARRY_URL       the server's HTTP address, http://127.0.0.1:port
//   QUARRY_PASSWORD  the password of the user `quarry`
//   QUARRY_SECRET    a connection password stored in the server: it must never reach the page
//   CHROMIUM         the browser to drive
//   QUARRY_SHORT_URL a second server whose tokens expire after a second
//   QUARRY_MANY_URL  a third server holding 100 connections
//   PG_HOST, PG_PORT, PG_DATABASE, PG_USER  a PostgreSQL database with three tables
//   PG_REFUSED_USER  a role of that server that may not log in
//   EXPECTED_JOIN    the join's rows as PostgreSQL answers it: [[name, total], ...]
//   ARTIFACTS        where screenshots go
// Any failed expectation throws, and the process exits non-zero with the reason.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env('QUARRY_URL');
const password = env('QUARRY_PASSWORD');
const secret = env('QUARRY_SECRET');
const artifacts = env('ARTIFACTS');
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  // The tests run as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(15_000);

// Every response of the run, to look for the secret afterwards.
const responses = [];
page.on('response', (response) => {
  // The event stream stays open while a page follows it: its body never ends.
  if ((response.headers()['content-type'] ?? '').startsWith('text/event-stream')) return;
  responses.push(
    response
      .body()
      .then((body) => ({ url: response.url(), body: body.toString('utf8') }))
      .catch(() => ({ url: response.url(), body: '' })),
  );
});
const shot = (name) => page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true });
const row = (name) => page.locator(`tr[data-connection="${name}"]`);

/** Every form control of the page has a label (or a name of its own). */
async function assertLabelled(where) {
  const unlabeled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea, button, [contenteditable=true]')]
      .filter(
        (el) =>
          !(el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.textContent?.trim()),
      )
      .map((el) => el.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabeled, [], `unlabelled controls on ${where}`);
}

async function step(name, run) {
  try {
    await run();
    console.log(`ok: ${name}`);
  } catch (error) {
    await shot(`failed-${name.replaceAll(' ', '-')}`).catch(() => {});
    throw new Error(`step '${name}' failed: ${error.message}`);
  }
}

await step('the page is served with a content security policy', async () => {
  const response = await page.goto(url);
  const csp = response.headers()['content-security-policy'];
  assert.ok(csp && csp.includes("script-src 'self'"), `CSP header: ${csp}`);
});

await step('a wrong password is refused', async () => {
  await page.getByLabel('User').fill('quarry');
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /password|credentials|user/i);
  await shot('sign-in');
});

await step('sign in', async () => {
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Connections' }).waitFor();
  await row('shop').waitFor();
  await row('demo').waitFor();
  await shot('connections');
});

await step('a new connection with refused credentials shows the error beside the password', async () => {
  await page.getByRole('button', { name: 'New connection' }).click();
  const form = page.getByRole('form', { name: 'New connection' });
  await form.waitFor();
  await form.getByLabel('Source type').selectOption('postgres');
  await form.getByLabel('Name *').fill('sales');
  await form.getByLabel('Host *').fill(env('PG_HOST'));
  await form.getByLabel('Port').fill(env('PG_PORT'));
  await form.getByLabel('Database *').fill(env('PG_DATABASE'));
  await form.getByLabel('User *').fill(env('PG_REFUSED_USER'));
  await form.getByLabel('Password').fill('wrong-password');
  // Required first, advanced folded away.
  assert.equal(await form.getByLabel('Statement timeout').isVisible(), false);
  await form.getByRole('button', { name: 'Test' }).click();
  const beside = form.locator('#field-password-error');
  await beside.waitFor();
  assert.match(await beside.innerText(), /authentication failed for user/);
  await shot('editor-refused');
  await assertLabelled('the connection editor');
});

await step('fixed, tested and saved', async () => {
  const form = page.getByRole('form', { name: 'New connection' });
  await form.getByLabel('User *').fill(env('PG_USER'));
  await form.getByLabel('Password').fill(secret);
  await form.getByRole('button', { name: 'Test' }).click();
  await form.getByRole('status').filter({ hasText: 'Connected' }).waitFor();
  assert.equal(await form.locator('#field-password-error').count(), 0);
  await form.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: 'Import sales' }).waitFor();
});

await step('import two of three tables with a pattern, with live progress and a summary', async () => {
  const kept = page.getByRole('list', { name: 'Kept tables' });
  await kept.locator('li').nth(2).waitFor();
  assert.equal(await kept.locator('li').count(), 3);
  await page.getByLabel('Include tables').fill('public.*');
  await page.getByLabel('Exclude tables').fill('[bad');
  await page.getByRole('button', { name: 'Apply patterns' }).click();
  await page.locator('#exclude-error').waitFor();
  await page.getByLabel('Exclude tables').fill('notes');
  await page.getByRole('button', { name: 'Apply patterns' }).click();
  await page.getByRole('status').filter({ hasText: '2 tables kept' }).waitFor();
  assert.deepEqual(
    await kept.locator('li').evaluateAll((items) => items.map((i) => i.dataset.table)),
    ['public.customers', 'public.orders'],
  );
  // The preview: each column with its source and Arrow types.
  await kept.locator('li[data-table="public.orders"] summary').click();
  const columns = kept.getByRole('table', { name: 'Columns of public.orders' });
  const total = await columns.locator('tr', { hasText: 'total' }).locator('td').allInnerTexts();
  assert.deepEqual(total.slice(0, 3), ['total', 'numeric(10,2)', 'Decimal128(10, 2)']);
  await shot('import-tables');
  await assertLabelled('the import wizard');
  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByLabel('Access mode').selectOption('cache');
  await page.getByLabel('Refresh mode').selectOption('full');
  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByRole('button', { name: 'Import 2 tables' }).click();
  const summary = page.getByRole('status', { name: 'Summary' });
  await summary.waitFor();
  assert.match(await summary.innerText(), /Imported 2 tables: 5 rows/);
  const progress = page.getByRole('table', { name: 'Import progress' });
  const orders = await progress.locator('tr[data-table="public.orders"] td').allInnerTexts();
  assert.deepEqual(orders.slice(0, 3).map((c) => c.trim()), ['public.orders', 'done', '3']);
  await shot('import-summary');
  await page.getByRole('link', { name: 'All connections' }).click();
  await row('sales').waitFor();
});

await step('the editor shows a stored password as set, never its value', async () => {
  await row('sales').getByRole('button', { name: 'Edit' }).click();
  const form = page.getByRole('form', { name: 'Edit sales' });
  await form.waitFor();
  const password = form.getByLabel('Password');
  assert.equal(await password.inputValue(), '');
  assert.match(await password.getAttribute('placeholder'), /^set/);
  assert.equal(await form.getByLabel('Database *').inputValue(), env('PG_DATABASE'));
  await shot('editor-edit');
  await form.getByRole('button', { name: 'Cancel' }).click();
  await form.waitFor({ state: 'detached' });
});

await step('the tables page refreshes and purges a table', async () => {
  await row('sales').getByRole('link', { name: 'sales' }).click();
  await page.getByRole('heading', { name: 'Tables of sales' }).waitFor();
  const table = (name) => page.locator(`tr[data-table="public.${name}"]`);
  for (const name of ['customers', 'orders']) await table(name).waitFor();
  assert.equal(await table('notes').count(), 0);
  const cells = async () => (await table('orders').locator('td').allInnerTexts()).map((c) => c.trim());
  let [, mode, cache, version, rows] = await cells();
  assert.deepEqual([mode, cache, version, rows], ['cache', 'cached', '1', '3']);
  await table('orders').getByRole('button', { name: 'Refresh' }).click();
  await page.getByRole('status').filter({ hasText: 'Refresh public.orders' }).waitFor();
  await table('orders').locator('td', { hasText: /^2$/ }).waitFor();
  await shot('tables');
  await assertLabelled('the tables page');
  await table('orders').getByRole('button', { name: 'Purge' }).click();
  await page.getByRole('status').filter({ hasText: 'Purge public.orders' }).waitFor();
  [, , cache] = await cells();
  assert.equal(cache, 'not cached');
  await page.getByRole('link', { name: 'All connections' }).click();
  await row('sales').waitFor();
});

await step('the SQL page completes names, runs a join and shows the source\'s values', async () => {
  await page.getByRole('link', { name: 'SQL' }).click();
  const editor = page.getByRole('textbox', { name: 'SQL statement' });
  await editor.waitFor();
  await editor.click();
  await page.keyboard.type('SELECT * FROM sales.public.cus');
  await page.keyboard.press('Control+Space');
  await page.getByRole('option', { name: /customers/ }).first().waitFor();
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+a');
  await page.keyboard.press('Delete');
  await page.keyboard.type(
    'SELECT c.name, sum(o.total) AS total FROM sales.public.customers c ' +
      'JOIN sales.public.orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name',
  );
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  await page.getByRole('status').filter({ hasText: /\d+ rows in/ }).waitFor();
  const grid = page.getByRole('table', { name: 'Result' });
  const cells = await grid.locator('tbody tr').evaluateAll((rows) =>
    rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent.trim())),
  );
  const expected = JSON.parse(env('EXPECTED_JOIN'));
  assert.equal(cells.length, expected.length, JSON.stringify(cells));
  cells.forEach(([name, total], i) => {
    assert.equal(name, expected[i][0]);
    // Decimals arrive as exact text, scale and all.
    assert.equal(total, expected[i][1], `${name}: ${total} vs ${expected[i][1]}`);
  });
  await shot('sql');
  await assertLabelled('the SQL page');
});

await step('explain shows the plan', async () => {
  await page.getByRole('button', { name: 'Explain' }).click();
  const plan = page.getByLabel('Plan');
  await plan.waitFor();
  assert.match(await plan.innerText(), /logical_plan/);
});

await step('an error shows Quarry\'s message', async () => {
  await page.keyboard.press('Control+a');
  await page.getByRole('textbox', { name: 'SQL statement' }).click();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('SELECT nope FROM sales.public.customers');
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /nope/);
});

await step('a long query is cancelled', async () => {
  await page.getByRole('textbox', { name: 'SQL statement' }).click();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('SELECT count(*) FROM range(1, 100000000000)');
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  const cancel = page.getByRole('button', { name: 'Cancel' });
  await cancel.click();
  await page.getByRole('status').filter({ hasText: 'Cancelled' }).waitFor();
});

await step('a million rows: the first ones show before the rest, up to the cap', async () => {
  await page.getByRole('textbox', { name: 'SQL statement' }).click();
  await page.keyboard.press('Control+a');
  await page.keyboard.type('SELECT value, value * 2 AS twice FROM range(1000000)');
  await page.keyboard.press('Escape');
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  const status = page.getByRole('status').filter({ hasText: 'the cap' });
  await status.waitFor();
  const text = await status.innerText();
  assert.match(text, /First 10,000 rows shown/);
  assert.equal(await page.getByRole('table', { name: 'Result' }).locator('tbody tr').count(), 10_000);
  console.log(`figure: 1M-row result: ${text}`);
  await page.getByRole('link', { name: 'Connections' }).click();
  await row('sales').waitFor();
});

await step('filter by type', async () => {
  await page.getByLabel('Type').selectOption('sqlite');
  await row('shop').waitFor({ state: 'detached' });
  assert.equal(await row('demo').count(), 1);
  await page.getByLabel('Type').selectOption('');
  await row('shop').waitFor();
});

await step('test a connection', async () => {
  await row('shop').getByRole('button', { name: 'Test' }).click();
  await page.getByRole('status').filter({ hasText: 'Test shop' }).waitFor();
  await row('shop').locator('.badge.ok').waitFor();
  assert.match(await row('shop').locator('td.status').innerText(), /tested .* ago, \d+ ms/);
});

await step('filter by status', async () => {
  await page.getByLabel('Status').selectOption('ok');
  await row('demo').waitFor({ state: 'detached' });
  assert.equal(await row('shop').count(), 1);
  await page.getByLabel('Status').selectOption('');
});

await step('rename', async () => {
  await row('demo').getByRole('button', { name: 'Rename' }).click();
  await page.getByLabel('New name of demo').fill('demo_shop');
  await page.getByRole('button', { name: 'Save' }).click();
  await row('demo_shop').waitFor();
  assert.equal(await row('demo').count(), 0);
});

await step('delete asks first', async () => {
  await row('demo_shop').getByRole('button', { name: 'Delete' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await shot('delete-dialog');
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  assert.equal(await row('demo_shop').count(), 1);
  await row('demo_shop').getByRole('button', { name: 'Delete' }).click();
  await dialog.getByRole('button', { name: 'Delete' }).click();
  await row('demo_shop').waitFor({ state: 'detached' });
});

await step('usable at phone width', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
  await shot('connections-phone');
  await page.setViewportSize({ width: 1280, height: 800 });
});

await step('keyboard reaches every action', async () => {
  await page.locator('body').focus();
  const reached = new Set();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement?.textContent?.trim() ?? ''));
  }
  for (const action of ['Test', 'Discover', 'Refresh', 'Purge', 'Rename', 'Delete']) {
    assert.ok(reached.has(action), `Tab never reached ${action}: ${[...reached].join(', ')}`);
  }
});

await step('every control has a label', async () => {
  await assertLabelled('the connections page');
});

await step('no secret in the page, the storage or any response', async () => {
  const html = await page.content();
  assert.ok(!html.includes(secret), 'the page holds the stored password');
  const storage = await page.evaluate(() => ({
    local: { ...localStorage },
    session: { ...sessionStorage },
    cookies: document.cookie,
  }));
  assert.deepEqual(Object.keys(storage.local), []);
  assert.deepEqual(Object.keys(storage.session), ['quarry.token']);
  assert.equal(storage.cookies, '');
  assert.ok(!page.url().includes(secret) && !page.url().includes(storage.session['quarry.token']));
  for (const { url: where, body } of await Promise.all(responses)) {
    assert.ok(!body.includes(secret), `the response of ${where} holds the stored password`);
  }
});

await step('a forged token goes back to sign-in', async () => {
  await page.evaluate(() => sessionStorage.setItem('quarry.token', 'forged-token'));
  await page.reload();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('quarry.token')), null);
});

await step('a hundred connections are listed', async () => {
  const fresh = await context.newPage();
  const started = Date.now();
  await fresh.goto(env('QUARRY_MANY_URL'));
  await fresh.getByLabel('Password').fill(password);
  await fresh.getByRole('button', { name: 'Sign in' }).click();
  const signedIn = Date.now();
  await fresh.locator('tr[data-connection]').nth(99).waitFor();
  const listed = Date.now();
  assert.equal(await fresh.locator('tr[data-connection]').count(), 100);
  const load = await fresh.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return Math.round(nav.loadEventEnd - nav.startTime);
  });
  console.log(
    `figure: 100 connections: page load ${load} ms; sign-in to the full list ${listed - signedIn} ms ` +
      `(page opened to list, with typing: ${listed - started} ms)`,
  );
  await fresh.close();
});

await step('an expired token goes back to sign-in', async () => {
  await page.goto(env('QUARRY_SHORT_URL'));
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Connections' }).waitFor();
  // Until the server itself refuses the token.
  const status = () =>
    page.evaluate(async () => {
      const token = sessionStorage.getItem('quarry.token');
      return (await fetch('/connections', { headers: { Authorization: `Bearer ${token}` } })).status;
    });
  for (let tries = 0; (await status()) !== 401; tries++) {
    assert.ok(tries < 100, 'the token did not expire within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await page.getByRole('button', { name: 'Reload' }).click();
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
});

await browser.close();
