//! [`Decision`]: an agent's answer to one event, returned by the handler (the WASM counterpart
//! of the UDS SDK's `Reply`: same builder methods, but a value rather than a channel, since a
//! WASM call is synchronous).

use turnstile_wire::turnstile_capnp::{agent_response, header_op};

/// A header mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderOp {
    Add(Vec<u8>, Vec<u8>),
    Set(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// Everything besides the verdict; allocated only when used, so a bare allow costs nothing.
#[derive(Debug, Default, Clone, PartialEq)]
struct Extras {
    request_ops: Vec<HeaderOp>,
    response_ops: Vec<HeaderOp>,
    block_headers: Vec<(Vec<u8>, Vec<u8>)>,
    tags: Vec<String>,
    rule_ids: Vec<String>,
    reason_codes: Vec<String>,
    confidence: Option<f32>,
}

/// What should happen to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it with this status (0 means 403) and body.
    Block {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: Vec<u8>,
    },
    /// Send the client to `location` (status 0 means 302).
    Redirect {
        /// Location header.
        location: String,
        /// HTTP status.
        status: u16,
    },
}

/// The answer to one event of one request.
///
/// Start from [`Decision::allow`], [`Decision::block`], [`Decision::redirect`] or
/// [`Decision::need_more`]; add header operations and audit data with the builder methods.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a Decision does nothing unless returned"]
pub struct Decision {
    verdict: Verdict,
    need_more: bool,
    extras: Option<Box<Extras>>,
}

impl Decision {
    /// Lets the request through.
    pub fn allow() -> Self {
        Decision {
            verdict: Verdict::Allow,
            need_more: false,
            extras: None,
        }
    }

    /// Refuses the request with `status` (0 means 403) and `body`.
    pub fn block(status: u16, body: impl AsRef<[u8]>) -> Self {
        Decision {
            verdict: Verdict::Block {
                status,
                body: body.as_ref().to_vec(),
            },
            need_more: false,
            extras: None,
        }
    }

    /// Sends the client to `location` with `status` (301, 302, 303, 307, 308; 0 means 302).
    pub fn redirect(location: impl Into<String>, status: u16) -> Self {
        Decision {
            verdict: Verdict::Redirect {
                location: location.into(),
                status,
            },
            need_more: false,
            extras: None,
        }
    }

    /// No decision yet: asks for further body chunks (the request stays open).
    pub fn need_more() -> Self {
        Decision {
            need_more: true,
            ..Decision::allow()
        }
    }

    /// The verdict.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// Whether more body is asked for.
    pub fn needs_more(&self) -> bool {
        self.need_more
    }

    /// Audit rule ids added so far.
    pub fn rule_ids(&self) -> &[String] {
        self.extras.as_deref().map_or(&[], |x| &x.rule_ids[..])
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    fn op(mut self, response: bool, op: HeaderOp) -> Self {
        let x = self.extras();
        if response {
            x.response_ops.push(op);
        } else {
            x.request_ops.push(op);
        }
        self
    }

    /// Appends a request header before forwarding (keeps fields with the same name).
    pub fn add_request_header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Add(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.op(false, op)
    }

    /// Replaces every request header named `name` by this one.
    pub fn set_request_header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Set(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.op(false, op)
    }

    /// Removes every request header named `name`.
    pub fn remove_request_header(self, name: impl AsRef<[u8]>) -> Self {
        self.op(false, HeaderOp::Remove(name.as_ref().to_vec()))
    }

    /// Appends a response header before sending the response downstream.
    pub fn add_response_header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Add(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.op(true, op)
    }

    /// Replaces every response header named `name` by this one.
    pub fn set_response_header(self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let op = HeaderOp::Set(name.as_ref().to_vec(), value.as_ref().to_vec());
        self.op(true, op)
    }

    /// Removes every response header named `name`.
    pub fn remove_response_header(self, name: impl AsRef<[u8]>) -> Self {
        self.op(true, HeaderOp::Remove(name.as_ref().to_vec()))
    }

    /// A header of the refusal response (for a block).
    pub fn block_header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        let h = (name.as_ref().to_vec(), value.as_ref().to_vec());
        self.extras().block_headers.push(h);
        self
    }

    /// Adds an audit tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.extras().tags.push(tag.into());
        self
    }

    /// Adds the id of a rule that matched.
    pub fn rule(mut self, rule_id: impl Into<String>) -> Self {
        self.extras().rule_ids.push(rule_id.into());
        self
    }

    /// Adds a reason code.
    pub fn reason(mut self, code: impl Into<String>) -> Self {
        self.extras().reason_codes.push(code.into());
        self
    }

    /// Sets the confidence of the verdict, 0.0 to 1.0 (clamped).
    pub fn confidence(mut self, confidence: f32) -> Self {
        self.extras().confidence = Some(confidence.clamp(0.0, 1.0));
        self
    }

    /// Writes this decision as an `AgentResponse`.
    pub(crate) fn write(&self, mut r: agent_response::Builder<'_>) {
        let none = Extras::default();
        let x = self.extras.as_deref().unwrap_or(&none);
        {
            let mut v = r.reborrow().init_verdict();
            match &self.verdict {
                Verdict::Allow => v.set_allow(()),
                Verdict::Block { status, body } => {
                    let mut b = v.init_block();
                    b.set_status(*status);
                    b.set_body(body);
                    if !x.block_headers.is_empty() {
                        let mut hs = b.init_headers(len32(x.block_headers.len()));
                        for (i, (n, val)) in x.block_headers.iter().enumerate() {
                            let mut h = hs.reborrow().get(len32(i));
                            h.set_name(n);
                            h.set_value(val);
                        }
                    }
                }
                Verdict::Redirect { location, status } => {
                    let mut rd = v.init_redirect();
                    rd.set_location(location.as_str());
                    rd.set_status(*status);
                }
            }
        }
        r.set_need_more(self.need_more);
        if self.extras.is_none() {
            return;
        }
        if !x.request_ops.is_empty() {
            write_ops(
                r.reborrow()
                    .init_request_headers(len32(x.request_ops.len())),
                &x.request_ops,
            );
        }
        if !x.response_ops.is_empty() {
            write_ops(
                r.reborrow()
                    .init_response_headers(len32(x.response_ops.len())),
                &x.response_ops,
            );
        }
        let audit = !x.tags.is_empty()
            || !x.rule_ids.is_empty()
            || !x.reason_codes.is_empty()
            || x.confidence.is_some();
        if audit {
            let mut a = r.init_audit();
            let texts = |list: capnp::text_list::Builder<'_>, items: &[String]| {
                let mut list = list;
                for (i, t) in items.iter().enumerate() {
                    list.set(len32(i), t.as_str());
                }
            };
            texts(a.reborrow().init_tags(len32(x.tags.len())), &x.tags);
            texts(
                a.reborrow().init_rule_ids(len32(x.rule_ids.len())),
                &x.rule_ids,
            );
            texts(
                a.reborrow().init_reason_codes(len32(x.reason_codes.len())),
                &x.reason_codes,
            );
            match x.confidence {
                Some(c) => a.init_confidence().set_value(c),
                None => a.init_confidence().set_unknown(()),
            }
        }
    }
}

fn write_ops(mut list: capnp::struct_list::Builder<'_, header_op::Owned>, ops: &[HeaderOp]) {
    for (i, op) in ops.iter().enumerate() {
        let mut b = list.reborrow().get(len32(i));
        match op {
            HeaderOp::Add(n, v) => {
                let mut h = b.init_add();
                h.set_name(n);
                h.set_value(v);
            }
            HeaderOp::Set(n, v) => {
                let mut h = b.init_set();
                h.set_name(n);
                h.set_value(v);
            }
            HeaderOp::Remove(n) => b.set_remove(n),
        }
    }
}

/// A list length for a builder: lists here come from the agent's own decisions, and anything
/// past `u32::MAX` would not fit a message anyway, so it is cut.
pub(crate) fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
