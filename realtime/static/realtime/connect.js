/**
 * connect.js: one connected client for the page, for `{% realtime connect=True %}`.
 *
 * Loading this module (unlike realtime.js, which only defines things) acts on the page:
 * it builds a client from the `<meta name="realtime">` element the tag rendered, exposes
 * it as `window.realtime`, connects it, and once it is connected fires `realtime:ready`
 * on `document` (detail: {client}). Page code, module or classic script, then needs no
 * import:
 *
 *     document.addEventListener("realtime:ready", (event) => {
 *       event.detail.client.subscribe("rooms/lobby", (message) => console.log(message.data));
 *     });
 *
 * `window.realtime` is set before the module finishes loading, so code that runs after
 * `DOMContentLoaded` may subscribe at once (requests are queued until connected).
 */

import {RealtimeClient} from "./realtime.js";

const client = RealtimeClient.fromPage();
window.realtime = client;
client.connect().then(
  () => document.dispatchEvent(new CustomEvent("realtime:ready", {detail: {client}})),
  (error) => console.warn("realtime: could not connect", error),
);
