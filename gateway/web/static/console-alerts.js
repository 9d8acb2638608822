/* Opt-in alerts on a new offer (docs/pages.md, "Agent console"): a short tone made in the page
   (WebAudio, no sound file) and, while the tab is hidden, a browser notification (the
   Notification API, once the agent granted it). Off until the agent ticks the box; the choice is
   kept in localStorage. The page's own hooks (contactgate:offer) are called either way. */
import { t } from "./console-i18n.js";

const KEY = "contactgate:console:alerts";
let audio = null;

export function alertsOn() {
  try { return localStorage.getItem(KEY) === "on"; } catch (e) { return false; }
}

/** Called from the checkbox's change (a user gesture: the browser lets the page make sound and
    ask for the notification permission then). */
export function setAlerts(on) {
  try { localStorage.setItem(KEY, on ? "on" : "off"); } catch (e) { /* private mode */ }
  if (!on) return;
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!audio && Context) audio = new Context();
  if (audio && audio.state === "suspended") audio.resume();
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
}

function tone() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return;
  if (!audio) audio = new Context();
  const now = audio.currentTime;
  const oscillator = audio.createOscillator();
  const gain = audio.createGain();
  oscillator.frequency.value = 880;
  gain.gain.setValueAtTime(0.2, now);
  gain.gain.exponentialRampToValueAtTime(0.001, now + 0.5);
  oscillator.connect(gain).connect(audio.destination);
  oscillator.start(now);
  oscillator.stop(now + 0.5);
}

/** A new offer came in: sound it, and notify when the agent is looking elsewhere. */
export function announceOffer(offer) {
  if (!alertsOn()) return;
  try { tone(); } catch (e) { /* no audio device */ }
  if (document.hidden && "Notification" in window && Notification.permission === "granted") {
    const customer = (offer.customer && offer.customer.name) || t("customer");
    const note = new Notification(t("newOffer", { name: customer }),
      { body: t("newOfferBody", { channel: offer.channel || "", queue: offer.queue || "" }), tag: `offer-${offer.id}` });
    note.addEventListener("click", () => { window.focus(); note.close(); });
  }
}
