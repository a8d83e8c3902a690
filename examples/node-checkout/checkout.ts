// A Node checkout against the vault through the TypeScript client that `buf generate`
// makes from proto/ (ts-proto, @grpc/grpc-js): tokenize the card at checkout, keep only
// the token, reveal the card for a refund with a purpose.
//
//   make clients   # generates ./gen from proto/ and installs the pinned npm packages
//   NODE_PATH=.tools/node_modules .tools/node_modules/.bin/tsx \
//     examples/node-checkout/checkout.ts 127.0.0.1:50051 "$(cat var/dev-api-key)"
import { randomBytes } from "node:crypto";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  type DetokenizeResponse,
  TokenizeRequest,
  type TokenizeResponse,
  TokenServiceClient,
} from "./gen/vault/v1/token_service";
import { DataKind } from "./gen/vault/v1/types";

const [address, apiKey] = process.argv.slice(2);
const client = new TokenServiceClient(address, credentials.createInsecure());
const auth = new Metadata();
auth.set("authorization", `Bearer ${apiKey}`);
const deadline = () => ({ deadline: new Date(Date.now() + 10_000) });

function tokenize(request: TokenizeRequest): Promise<TokenizeResponse> {
  return new Promise((resolve, reject) =>
    client.tokenize(request, auth, deadline(), (err: ServiceError | null, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

function detokenize(token: string, purpose: string): Promise<DetokenizeResponse> {
  return new Promise((resolve, reject) =>
    client.detokenize({ token, purpose }, auth, deadline(), (err: ServiceError | null, res) =>
      err ? reject(err) : resolve(res),
    ),
  );
}

async function main(): Promise<void> {
  // Checkout: the shop stores the token and the masked form, never the card number.
  const card = await tokenize(
    TokenizeRequest.fromPartial({
      kind: DataKind.DATA_KIND_PAN,
      text: "4242 4242 4242 4242",
      metadata: { order: "o-2002" },
      // A retried call returns the same token. Random letters and digits, not a
      // timestamp: the vault refuses a request id with a Luhn-valid run of 12-19
      // digits (a card number must not reach the audit trail), as 13-digit
      // millisecond times are one time in ten.
      requestId: `node-${randomBytes(16).toString("base64url")}`,
    }),
  );
  console.log(`order o-2002 stored with card ${card.masked} (${card.token})`);
  // Refund: the refund desk reveals the card, stating why (the reveal is audited).
  const revealed = await detokenize(card.token, "refund of order o-2002");
  console.log(`refund to card ending ${revealed.text?.slice(-4)} (order ${revealed.metadata.order})`);
  try {
    await detokenize(card.token, "");
  } catch (err) {
    console.log(`a reveal without a purpose is refused: ${(err as ServiceError).code}`);
  }
  client.close();
}

main().catch((err: unknown) => {
  console.error(`checkout failed: ${(err as Error).message}`);
  process.exit(1);
});
