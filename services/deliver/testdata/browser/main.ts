// An in-app inbox as a customer's page would build it: it gets Whisper's
// base URL, the user and an in-app token (issued by the customer's backend
// with IssueInAppToken) in its URL fragment, streams the user's messages
// with connect-web, renders each, and marks one read when it is clicked.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { DeliveryService, type InAppMessage } from "./gen/whisper/delivery/v1/delivery_pb";

const params = new URLSearchParams(location.hash.slice(1));
const baseUrl = params.get("base") ?? "";
const userId = params.get("user") ?? "";
const token = params.get("token") ?? "";

const bearer: Interceptor = (next) => (req) => {
  req.header.set("Authorization", `Bearer ${token}`);
  return next(req);
};
const client = createClient(DeliveryService, createConnectTransport({ baseUrl, interceptors: [bearer] }));

const status = document.getElementById("status")!;
const list = document.getElementById("messages")!;

function setStatus(state: string, text: string) {
  status.dataset.state = state;
  status.textContent = text;
}

function render(m: InAppMessage) {
  const li = document.createElement("li");
  li.dataset.deliveryId = m.deliveryId;
  li.dataset.read = "false";
  const title = document.createElement("strong");
  title.className = "title";
  title.textContent = m.content?.title ?? "";
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = m.content?.body ?? "";
  li.append(title, " ", body);
  li.addEventListener("click", async () => {
    try {
      await client.markInAppRead({ userId, deliveryIds: [m.deliveryId] });
      li.dataset.read = "true";
    } catch (e) {
      li.dataset.error = String(e);
    }
  });
  list.append(li);
}

async function stream() {
  try {
    for await (const res of client.streamInApp({ userId })) {
      switch (res.kind.case) {
        case "message":
          render(res.kind.value);
          break;
        case "caughtUp":
          setStatus("connected", "connected");
          break;
        case "heartbeat":
          status.dataset.heartbeats = String(Number(status.dataset.heartbeats ?? "0") + 1);
          break;
      }
    }
    setStatus("closed", "closed");
  } catch (e) {
    setStatus("error", `error: ${e}`);
  }
}

void stream();
