@0xa21173eba3c1684a;
# turnstile — the one schema for everything on the wire.
#
# Two protocols share this file:
#
#   * the CLIENT protocol, client <-> turnstile over QUIC (ALPN "turnstile/1"): roots `Request` and
#     `Response`, one bidirectional QUIC stream per request;
#   * the AGENT protocol v2, turnstile <-> agent over a Unix domain socket (and the very same bytes
#     for in-process WASM agents): roots `ProxyToAgent` and `AgentToProxy`, many requests
#     multiplexed on one connection by `correlationId`.
#
# Every message travels in a frame: [u32 little-endian payload length][u8 kind][payload], where the
# payload is one standard (unpacked) Cap'n Proto message and `kind` names its root:
#   1 = Request, 2 = Response, 3 = ProxyToAgent, 4 = AgentToProxy.
# The length counts the payload only (not the 5 header bytes). See docs/protocol.md.
#
# Conventions:
#   * byte strings that come from HTTP (header names and values, bodies) are `Data`, never copied
#     or re-encoded: readers see them in place;
#   * "0 = not set" is stated on each field where it applies; Cap'n Proto has no optional scalars;
#   * durations carry their unit in the name (`Ms`, `Us`), sizes end in `Bytes`.

const clientProtocolVersion :UInt32 = 1;
# The client protocol version this schema describes. Negotiated by `Hello` / `HelloAck`.

const agentProtocolVersion :UInt32 = 2;
# The agent protocol version this schema describes (Agent Protocol 2.0). Negotiated at handshake.

# ------------------------------------------------------------------------------------------------
# Shared building blocks
# ------------------------------------------------------------------------------------------------

struct Header {
  # One HTTP header field, bytes as seen on the wire (no case folding, no decoding).
  name @0 :Data;
  value @1 :Data;
}

struct HttpRequest {
  # Request metadata of the HTTP request being decided (the request phase).
  method @0 :Text;            # "GET", "POST", ...
  authority @1 :Text;         # host[:port], the :authority / Host of the request
  path @2 :Text;              # path without the query, percent-encoding kept as received
  query @3 :Text;             # query string without the leading '?', "" when absent
  headers @4 :List(Header);   # in received order; repeated names appear repeatedly
  clientAddress @5 :Text;     # "ip:port" of the downstream client as the proxy saw it
  scheme @6 :Text;            # "https", "http"
  protocol @7 :Text;          # "HTTP/1.1", "HTTP/2", "HTTP/3"
}

struct HttpResponse {
  # The upstream's response headers (the response phase).
  status @0 :UInt16;
  headers @1 :List(Header);
}

struct BodyChunk {
  # A piece of a request or response body. Chunks of one body arrive in order.
  chunkIndex @0 :UInt32;      # 0-based position of this chunk within its body
  data @1 :Data;
  isLast @2 :Bool;            # the end flag: no more chunks follow for this body
  totalBytes @3 :UInt64;      # total body size when known (Content-Length), 0 = unknown
  bytesTransferred @4 :UInt64;# cumulative bytes of this body including this chunk
  proxyBufferAvailableBytes @5 :UInt64; # sender's remaining buffer for this body (flow control), 0 = not reported
}

struct WebSocketFrame {
  # One WebSocket frame on an upgraded connection.
  opcode @0 :UInt8;           # RFC 6455 opcode: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong
  fin @1 :Bool;
  clientToServer @2 :Bool;    # direction of the frame
  frameIndex @3 :UInt64;      # 0-based index in its direction
  data @4 :Data;              # unmasked payload
}

enum GuardrailKind {
  # What a guardrail inspection looks for.
  promptInjection @0;
  pii @1;
  toxicity @2;
  jailbreak @3;
  custom @4;
}

struct GuardrailInspect {
  # Content submitted for guardrail inspection (LLM prompts or completions).
  kind @0 :GuardrailKind;
  content @1 :Data;           # the text or bytes to inspect
  isResponse @2 :Bool;        # true when `content` is model output, false for a prompt
  model @3 :Text;             # model name when known, "" otherwise
  policies @4 :List(Text);    # policy ids the caller wants applied, empty = agent defaults
}

struct RequestComplete {
  # The request finished; lets agents close per-request state and record outcomes.
  status @0 :UInt16;          # final HTTP status sent downstream, 0 = none (aborted)
  durationUs @1 :UInt64;      # request duration as measured by the proxy
  requestBodyBytes @2 :UInt64;
  responseBodyBytes @3 :UInt64;
  error @4 :Text;             # "" when the request completed normally
}

struct HeaderOp {
  # One header mutation. Mutations from several agents merge in chain order.
  union {
    add @0 :Header;           # append a field (keeps existing ones with the same name)
    set @1 :Header;           # replace every field with this name by this one
    remove @2 :Data;          # remove every field with this name (case-insensitive)
  }
}

struct Block {
  # Refuse the request with this response.
  status @0 :UInt16;          # HTTP status, e.g. 403; 0 is treated as 403
  body @1 :Data;              # response body, may be empty
  headers @2 :List(Header);   # extra response headers
}

struct Redirect {
  # Send the client elsewhere.
  location @0 :Text;          # absolute or relative URL for the Location header
  status @1 :UInt16;          # 301, 302, 303, 307 or 308; 0 is treated as 302
}

struct Verdict {
  # What should happen to the request.
  union {
    allow @0 :Void;
    block @1 :Block;
    redirect @2 :Redirect;
  }
}

struct Audit {
  # Why a verdict was reached; merged across agents and returned to the client.
  tags @0 :List(Text);
  ruleIds @1 :List(Text);
  reasonCodes @2 :List(Text);
  confidence :union {
    unknown @3 :Void;
    value @4 :Float32;        # 0.0 .. 1.0
  }
}

enum AgentOutcome {
  # How one agent call ended, as reported in `AgentTiming`.
  allowed @0;
  blocked @1;
  redirected @2;
  skipped @3;                 # the agent did not subscribe to this request (interest), no call made
  timeout @4;
  error @5;                   # transport or protocol error talking to the agent
  breakerOpen @6;             # circuit breaker open, no call made
  unhealthy @7;               # agent reported Unhealthy or Draining, no call made
  saturated @8;               # max in flight reached (or paused by flow control) past the wait bound
  cancelled @9;               # cancelled because another agent blocked first
}

enum FailMode {
  # What a failed agent call turns into.
  open @0;                    # allow, with an audit tag naming the agent and the failure
  closed @1;                  # block with the configured status
}

struct AgentTiming {
  # Per-agent cost of one request, for clients that want to see where time went.
  agentId @0 :Text;
  outcome @1 :AgentOutcome;
  elapsedUs @2 :UInt32;       # from dispatch to verdict (or to the failure)
  failMode @3 :FailMode;      # meaningful when the outcome is a failure
}

# ------------------------------------------------------------------------------------------------
# Client protocol (client <-> turnstile over QUIC)
# ------------------------------------------------------------------------------------------------

struct Request {
  # Root of every client-to-turnstile frame. The first frame on a bidirectional stream is a
  # Request; a `decide` whose body is not finished is followed on the same stream by further
  # Requests carrying `decide.requestBody` (or `responseBody`) chunks until `isLast`.
  correlationId @0 :UInt64;   # chosen by the client, echoed in the Response; 0 is allowed
  union {
    hello @1 :Hello;          # version negotiation; may be sent once per connection, first
    decide @2 :Decide;        # run the route's agent chain over an HTTP exchange
    task @3 :Task;            # run one agent task (orchestrators)
    memory @4 :Memory;        # shared key/value memory for agents
    control @5 :Control;      # spawn / terminate / list agents
    status @6 :StatusSubscribe; # stream status events on this stream until it is closed
    echo @7 :Data;            # answered with the same bytes, no agents involved (tests, benchmarks)
  }
}

struct Hello {
  # Client's supported client-protocol versions, preferred first.
  versions @0 :List(UInt32);
  clientName @1 :Text;        # free-form, for logs
}

struct HelloAck {
  # The version turnstile picked (the first of the client's it supports) and its limits.
  version @0 :UInt32;
  serverName @1 :Text;
  frameBytesMax @2 :UInt32;   # largest frame payload turnstile accepts
  requestBytesMax @3 :UInt64; # largest total request (all frames of one stream) accepted
  streamsMax @4 :UInt32;      # concurrent bidirectional streams per connection
}

struct Decide {
  # One phase of an HTTP exchange to run through the agent chain of `routeId`.
  routeId @0 :Text;           # route whose chain applies; "" = the default route
  requestId @1 :Text;         # caller's request id for logs and audit, may be ""
  phase :union {
    request @2 :DecideRequest;        # request headers (+ first body chunk)
    requestBody @3 :BodyChunk;        # a further request body chunk
    response @4 :DecideResponse;      # response headers (+ first body chunk)
    responseBody @5 :BodyChunk;       # a further response body chunk
    websocketFrame @6 :WebSocketFrame;
    guardrail @7 :GuardrailInspect;
    complete @8 :RequestComplete;
  }
}

struct DecideRequest {
  request @0 :HttpRequest;
  body @1 :BodyChunk;         # first body chunk; unset or `isLast` with empty data = no body
}

struct DecideResponse {
  request @0 :HttpRequest;    # the request this response answers (agents may need it)
  response @1 :HttpResponse;
  body @2 :BodyChunk;         # first response body chunk, as for DecideRequest
}

struct Task {
  # Run a task on one agent (orchestrator use).
  agentId @0 :Text;
  payload @1 :Data;           # opaque to turnstile
  deadlineMs @2 :UInt32;      # relative deadline; 0 = the agent's configured timeout
}

struct TaskResult {
  agentId @0 :Text;
  payload @1 :Data;
  elapsedUs @2 :UInt32;
}

struct Memory {
  # Shared memory operations, scoped by namespace.
  namespace @0 :Text;
  union {
    store @1 :MemoryStore;
    retrieve @2 :Data;        # key
    delete @3 :Data;          # key
    listPrefix @4 :MemoryList;
  }
}

struct MemoryStore {
  key @0 :Data;
  value @1 :Data;
  ttlMs @2 :UInt64;           # 0 = no expiry
}

struct MemoryList {
  prefix @0 :Data;
  limit @1 :UInt32;           # most keys to return, 0 = server maximum
}

struct MemoryResult {
  union {
    stored @0 :Void;
    value @1 :Data;           # the value; a missing key is an `Error` with code notFound
    deleted @2 :Bool;         # false when the key did not exist
    keys @3 :List(Data);      # sorted; truncated to the limit
  }
}

struct Control {
  # Agent lifecycle operations.
  union {
    spawn @0 :SpawnAgent;
    terminate @1 :Text;       # agent id
    list @2 :Void;
  }
}

struct SpawnAgent {
  agentId @0 :Text;
  command @1 :List(Text);     # argv of an agent process to supervise
  config @2 :Data;            # pushed to the agent with `ConfigureEvent`
}

enum Transport {
  uds @0;
  wasm @1;
}

enum AgentHealth {
  healthy @0;
  degraded @1;
  draining @2;
  unhealthy @3;
  unknown @4;                 # no handshake yet
}

struct AgentInfo {
  agentId @0 :Text;
  name @1 :Text;
  version @2 :Text;
  transport @3 :Transport;
  health @4 :AgentHealth;
  inFlight @5 :UInt32;
  breakerOpen @6 :Bool;
}

struct ControlResult {
  union {
    spawned @0 :AgentInfo;
    terminated @1 :Text;      # agent id
    agents @2 :List(AgentInfo);
  }
}

struct StatusSubscribe {
  intervalMs @0 :UInt32;      # how often to send a StatusEvent; 0 = server default
}

struct StatusEvent {
  timestampMs @0 :UInt64;     # Unix time
  shard @1 :UInt16;           # shard that owns this connection
  connections @2 :UInt32;     # open connections on that shard
  streams @3 :UInt32;         # open streams on that shard
  requestsTotal @4 :UInt64;
  agents @5 :List(AgentInfo);
}

struct Decision {
  # The outcome of a `decide`.
  verdict @0 :Verdict;
  requestHeaders @1 :List(HeaderOp);  # mutations to apply to the request before forwarding
  responseHeaders @2 :List(HeaderOp); # mutations to apply to the response before sending
  audit @3 :Audit;
  timings @4 :List(AgentTiming);      # one per agent of the chain, in chain order
  needMore @5 :Bool;          # an agent wants more body before it decides: send the next chunk
}

enum ErrorCode {
  # Typed errors. Numbers are stable; docs/protocol.md says what a client should do for each.
  unspecified @0;
  badRequest @1;              # the frame decoded but the request is not valid
  malformedFrame @2;          # the frame did not decode (truncated, unknown kind, bad message)
  tooLarge @3;                # a frame or the whole request exceeds a limit
  unsupportedVersion @4;      # no common protocol version
  unknownRoute @5;
  unknownAgent @6;
  notReplaySafe @7;           # sent in 0-RTT but not replay-safe: resend after the handshake
  overloaded @8;              # a limit on concurrency was hit; retry after `retryAfterMs`
  timeout @9;
  cancelled @10;
  shuttingDown @11;           # the server is draining; reconnect elsewhere or later
  notFound @12;
  unauthorized @13;
  notImplemented @14;         # understood but not offered by this server build
  internal @15;
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;           # for humans; do not parse
  retryAfterMs @2 :UInt32;    # 0 = no advice
}

struct Response {
  # Root of every turnstile-to-client frame; exactly one per Request frame that expects an
  # answer (body chunks that are not the last one are answered only when a decision is ready or
  # `needMore` is set). `status` streams many Responses on its stream.
  correlationId @0 :UInt64;   # the Request's correlationId
  union {
    helloAck @1 :HelloAck;
    decision @2 :Decision;
    taskResult @3 :TaskResult;
    memoryResult @4 :MemoryResult;
    controlResult @5 :ControlResult;
    statusEvent @6 :StatusEvent;
    echo @7 :Data;
    error @8 :Error;
  }
}

# ------------------------------------------------------------------------------------------------
# Agent protocol v2 (turnstile <-> agent over UDS; the same bytes for WASM agents)
# ------------------------------------------------------------------------------------------------
#
# Connection lifecycle: turnstile connects and sends `handshake`; the agent answers `handshake`
# with its capabilities; turnstile then sends `configure`. After that, events flow for many
# requests at once, each tagged with the request's `correlationId` (unique per connection, never
# 0); connection-level messages (handshake, configure, health, metrics, global flow control) use
# correlationId 0.

enum Encoding {
  # Encodings of the payload after the handshake. The handshake itself is always Cap'n Proto.
  capnp @0;
  json @1;                    # debugging mode (and the baseline stack); same fields, JSON text
}

enum EventType {
  # Events an agent can subscribe to. Only subscribed events are sent.
  requestHeaders @0;
  requestBody @1;
  responseHeaders @2;
  responseBody @3;
  websocketFrame @4;
  guardrailInspect @5;
  requestComplete @6;
}

struct HandshakeRequest {
  # turnstile -> agent, first message on a connection.
  supportedVersions @0 :List(UInt32); # agent protocol versions turnstile speaks, preferred first
  proxyId @1 :Text;           # e.g. "turnstile"
  proxyVersion @2 :Text;
  encodings @3 :List(Encoding); # encodings turnstile accepts, preferred first
  shard @4 :UInt16;           # shard (core) that owns this connection
}

struct AgentFeatures {
  streamingBody @0 :Bool;     # wants body chunks as they arrive (else buffered up to maxBodyBytes)
  websocket @1 :Bool;
  guardrails @2 :Bool;
  configPush @3 :Bool;        # sends ConfigUpdateRequest
  metricsExport @4 :Bool;     # sends MetricsReport
  concurrentRequests @5 :UInt32; # requests it processes at once on one connection, 0 = 1
  cancellation @6 :Bool;      # understands CancelRequest
  flowControl @7 :Bool;       # sends FlowControlSignal
}

struct AgentLimits {
  maxBodyBytes @0 :UInt64;    # largest body the agent inspects; 0 = no body
  maxConcurrency @1 :UInt32;  # requests in flight per connection, 0 = no limit declared
  preferredChunkBytes @2 :UInt32; # body chunk size it prefers, 0 = any
  maxMemoryBytes @3 :UInt64;  # memory the agent will use, 0 = not declared
  maxProcessingMs @4 :UInt32; # its own worst-case processing time, 0 = not declared
}

struct HealthConfig {
  reportIntervalMs @0 :UInt32; # how often the agent sends HealthStatus, 0 = never unprompted
  includeLoadMetrics @1 :Bool;
  includeResourceMetrics @2 :Bool;
}

struct Interest {
  # Cheap predicates evaluated by turnstile before calling the agent: a request that matches
  # none is never sent (outcome `skipped`). Empty lists match everything.
  pathPrefixes @0 :List(Text);
  methods @1 :List(Text);
  requiredHeaders @2 :List(Data); # header names that must be present (case-insensitive)
}

struct AgentCapabilities {
  protocolVersion @0 :UInt32; # the version the agent picked from supportedVersions
  agentId @1 :Text;
  name @2 :Text;
  version @3 :Text;
  supportedEvents @4 :List(EventType);
  features @5 :AgentFeatures;
  limits @6 :AgentLimits;
  health @7 :HealthConfig;
  interest @8 :Interest;
  encoding @9 :Encoding;      # the encoding the agent picked from `encodings`
}

struct HandshakeResponse {
  # agent -> turnstile, answer to HandshakeRequest.
  union {
    accepted @0 :AgentCapabilities;
    rejected @1 :Text;        # why the agent refuses (e.g. no common version)
  }
}

struct RequestMetadata {
  # Context of a request, sent with its first event.
  requestId @0 :Text;
  clientIp @1 :Data;          # 4 or 16 bytes
  clientPort @2 :UInt16;
  serverName @3 :Text;        # TLS SNI, "" = none
  tlsVersion @4 :Text;        # "" = plaintext
  routeId @5 :Text;
  upstreamId @6 :Text;
  timestampMs @7 :UInt64;     # Unix time the proxy received the request
  traceparent @8 :Text;       # W3C trace context, "" = none
  deadlineMs @9 :UInt32;      # time the agent has to answer, relative to receipt
}

struct RequestHeadersEvent {
  metadata @0 :RequestMetadata;
  request @1 :HttpRequest;
}

struct ResponseHeadersEvent {
  response @0 :HttpResponse;
  metadata @1 :RequestMetadata; # context of the request this response answers
  request @2 :HttpRequest;      # that request (method, path, headers), when the proxy sent it
}

struct CancelReason {
  union {
    clientDisconnect @0 :Void;
    timeout @1 :Void;
    blockedByAgent @2 :Text;  # id of the agent whose block won
    upstreamError @3 :Void;
    proxyShutdown @4 :Void;
    manual @5 :Text;          # admin action, with its reason
  }
}

struct CancelRequest {
  # Stop working on `correlationId`; no response is expected (one may still arrive and is dropped).
  reason @0 :CancelReason;
  timestampMs @1 :UInt64;
}

struct ConfigureEvent {
  # Agent configuration from turnstile's config, pushed after the handshake and on every reload.
  agentId @0 :Text;
  config @1 :Data;            # agent-specific document (TOML or JSON text, as configured)
  generation @2 :UInt64;      # increases with every reload
}

struct ConfigUpdateAck {
  # turnstile's answer to a ConfigUpdateRequest.
  requestId @0 :Text;
  accepted @1 :Bool;
  message @2 :Text;
}

struct Drain {
  # Stop taking new requests on this connection; in-flight ones finish by the deadline.
  deadlineMs @0 :UInt32;
}

struct ProxyToAgent {
  # Root of every turnstile-to-agent frame.
  correlationId @0 :UInt64;   # request this belongs to; 0 = connection-level
  union {
    handshake @1 :HandshakeRequest;
    requestHeaders @2 :RequestHeadersEvent;
    requestBodyChunk @3 :BodyChunk;
    responseHeaders @4 :ResponseHeadersEvent;
    responseBodyChunk @5 :BodyChunk;
    websocketFrame @6 :WebSocketFrame;
    guardrailInspect @7 :GuardrailInspect;
    requestComplete @8 :RequestComplete;
    cancel @9 :CancelRequest;
    configure @10 :ConfigureEvent;
    configUpdateAck @11 :ConfigUpdateAck;
    drain @12 :Drain;
    shutdown @13 :Void;       # close the connection after in-flight requests
  }
}

struct AgentResponse {
  # The agent's answer to one event of a request.
  verdict @0 :Verdict;
  requestHeaders @1 :List(HeaderOp);
  responseHeaders @2 :List(HeaderOp);
  audit @3 :Audit;
  needMore @4 :Bool;          # no decision yet: send further body chunks (streaming agents)
}

struct Degraded {
  disabledFeatures @0 :List(Text);
  timeoutMultiplier @1 :Float32 = 1.0; # e.g. 1.5 = allow 50% longer
}

struct Draining {
  etaMs @0 :UInt64;           # estimated time to drain, 0 = unknown
}

struct Unhealthy {
  reason @0 :Text;
  recoverable @1 :Bool;
}

struct LoadMetrics {
  inFlight @0 :UInt32;
  queueDepth @1 :UInt32;
  avgLatencyMs @2 :Float32;   # over the last interval
  p99LatencyMs @3 :Float32;
  requestsProcessed @4 :UInt64; # in the last interval
  requestsRejected @5 :UInt64;
}

struct ResourceMetrics {
  cpuPercent @0 :Float32 = -1;  # 0..100, negative = not reported
  memoryBytes @1 :UInt64;       # 0 = not reported
  memoryLimitBytes @2 :UInt64;  # 0 = not reported
  activeThreads @3 :UInt32;     # 0 = not reported
  openFds @4 :UInt32;           # 0 = not reported
}

struct HealthStatus {
  state :union {
    healthy @0 :Void;
    degraded @1 :Degraded;
    draining @2 :Draining;
    unhealthy @3 :Unhealthy;
  }
  message @4 :Text;
  load @5 :LoadMetrics;         # unset = not reported
  resources @6 :ResourceMetrics;# unset = not reported
  validUntilMs @7 :UInt64;      # Unix time this status expires, 0 = until the next report
}

struct Label {
  name @0 :Text;
  value @1 :Text;
}

struct CounterMetric {
  name @0 :Text;              # e.g. "requests_processed_total"
  labels @1 :List(Label);
  value @2 :UInt64;           # monotonically increasing
}

struct GaugeMetric {
  name @0 :Text;
  labels @1 :List(Label);
  value @2 :Float64;
}

struct HistogramBucket {
  le @0 :Float64;             # upper bound
  count @1 :UInt64;           # cumulative count
}

struct HistogramMetric {
  name @0 :Text;
  labels @1 :List(Label);
  sum @2 :Float64;
  count @3 :UInt64;
  buckets @4 :List(HistogramBucket);
}

struct MetricsReport {
  agentId @0 :Text;
  timestampMs @1 :UInt64;
  intervalMs @2 :UInt64;
  counters @3 :List(CounterMetric);
  gauges @4 :List(GaugeMetric);
  histograms @5 :List(HistogramMetric);
}

struct RuleDefinition {
  id @0 :Text;
  priority @1 :Int32;
  definition @2 :Data;        # agent-specific format
  enabled @3 :Bool;
}

struct RuleUpdate {
  ruleSet @0 :Text;
  rules @1 :List(RuleDefinition);
  removeRules @2 :List(Text);
}

struct ListUpdate {
  listId @0 :Text;
  add @1 :List(Text);
  remove @2 :List(Text);
}

struct RestartRequired {
  reason @0 :Text;
  gracePeriodMs @1 :UInt64;
}

struct ConfigError {
  error @0 :Text;
  field @1 :Text;             # "" = not tied to one field
}

struct ConfigUpdateRequest {
  requestId @0 :Text;         # echoed in ConfigUpdateAck
  timestampMs @1 :UInt64;
  update :union {
    requestReload @2 :Void;   # please resend ConfigureEvent
    ruleUpdate @3 :RuleUpdate;
    listUpdate @4 :ListUpdate;
    restartRequired @5 :RestartRequired; # a supervised agent is restarted
    configError @6 :ConfigError;
  }
}

struct FlowControlSignal {
  # Applies to the message's correlationId, or to the whole connection when it is 0.
  action :union {
    pause @0 :Void;           # send no new requests (or chunks) until resume
    resume @1 :Void;
    updateCapacity @2 :UInt64;# bytes the agent is willing to buffer
  }
}

enum LogLevel {
  error @0;
  warn @1;
  info @2;
  debug @3;
}

struct LogMessage {
  level @0 :LogLevel;
  message @1 :Text;
  fields @2 :List(Label);
}

struct AgentToProxy {
  # Root of every agent-to-turnstile frame.
  correlationId @0 :UInt64;   # request this answers; 0 = connection-level
  union {
    handshake @1 :HandshakeResponse;
    response @2 :AgentResponse;
    health @3 :HealthStatus;
    metrics @4 :MetricsReport;
    configUpdate @5 :ConfigUpdateRequest;
    flowControl @6 :FlowControlSignal;
    log @7 :LogMessage;
  }
}
