//! Our protocol types against the JSON Schema that the pinned CLI generates
//! (`codex app-server generate-json-schema`). A codex version bump that renames, removes or
//! retypes anything we send or read fails here, loudly.
//!
//! What we send is checked strictly: every property must exist in the schema (the schema itself
//! mostly allows extra properties, which would hide a rename), with the right type, and every
//! required one must be present. What we read is checked by decoding instances built from the
//! schema: one with only the required properties, one with all of them.
//!
//! The schema is generated with `--experimental`: the pool uses two experimental parts of the API
//! (`experimentalRawEvents` on `thread/start`, and `thread/inject_items`), so keeping the history
//! in our store breaks here first if codex changes them.

use codex_pool_process::{find_checked, DeclinePolicy};
use codex_pool_protocol::methods::*;
use codex_pool_protocol::notifications::{method as nm, ServerNotification};
use codex_pool_protocol::server_requests::{ServerRequest, ServerRequestKind};
use codex_pool_protocol::types::*;
use codex_pool_protocol::{ToolContent, ToolOutput, ToolSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

struct Schema {
    root: Value,
    client_methods: BTreeSet<String>,
    notification_methods: BTreeSet<String>,
    server_request_methods: BTreeSet<String>,
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let bin = find_checked(codex_pool_testkit::codex_bin().as_deref()).expect("the pinned codex is installed");
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(&bin)
            .args(["app-server", "generate-json-schema", "--experimental", "--out"])
            .arg(dir.path())
            .status()
            .expect("codex runs");
        assert!(status.success(), "generate-json-schema failed");
        let read = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(dir.path().join(name)).expect(name)).expect(name)
        };
        let methods = |v: Value| -> BTreeSet<String> {
            v["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["properties"]["method"]["enum"][0].as_str().unwrap().to_owned())
                .collect()
        };
        Schema {
            root: read("codex_app_server_protocol.schemas.json"),
            client_methods: methods(read("ClientRequest.json")),
            notification_methods: methods(read("ServerNotification.json")),
            server_request_methods: methods(read("ServerRequest.json")),
        }
    })
}

impl Schema {
    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("local ref");
                self.resolve(self.root.pointer(pointer).unwrap_or_else(|| panic!("dangling ref {r}")))
            }
            None => s,
        }
    }

    fn def(&self, name: &str) -> &Value {
        self.root["definitions"]
            .get(name)
            .or_else(|| self.root["definitions"]["v2"].get(name))
            .unwrap_or_else(|| panic!("the schema has no definition {name}: the protocol changed"))
    }

    /// Strict check of a value we send. Returns the problems found.
    fn check(&self, value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
        self.check_in(value, schema, path, out, &BTreeSet::new())
    }

    /// `sibling` names properties declared next to the branch being checked (allowed here too).
    fn check_in(&self, value: &Value, schema: &Value, path: &str, out: &mut Vec<String>, sibling: &BTreeSet<&str>) {
        let schema = self.resolve(schema);
        if schema == &Value::Bool(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
            return;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let mut beside: BTreeSet<&str> = sibling.clone();
                beside.extend(
                    schema
                        .get("properties")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flat_map(|p| p.keys().map(String::as_str)),
                );
                let fits = branches.iter().any(|b| {
                    let mut errs = Vec::new();
                    self.check_in(value, b, path, &mut errs, &beside);
                    errs.is_empty()
                });
                if !fits {
                    out.push(format!("{path}: {value} fits none of the {key} branches"));
                }
                if schema.get("properties").is_none() {
                    return;
                }
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.check(value, s, path, out);
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(value) {
                out.push(format!("{path}: {value} is not one of {options:?}"));
            }
        }
        if let Some(ty) = schema.get("type") {
            let types: Vec<&str> = match ty {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
            if !ok {
                out.push(format!("{path}: {actual} where the schema wants {types:?}"));
                return;
            }
        }
        if let (Value::Object(obj), Some(props)) = (value, schema.get("properties").and_then(Value::as_object)) {
            for (k, v) in obj {
                match props.get(k) {
                    Some(s) => self.check(v, s, &format!("{path}.{k}"), out),
                    // Declared in a branch beside these properties (checked with the branches).
                    None if sibling.contains(k.as_str()) || self.branch_properties(schema).contains(k.as_str()) => {}
                    None => out.push(format!("{path}.{k}: not in the schema (renamed or removed?)")),
                }
            }
            for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !obj.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{path}: required property {r} missing"));
                }
            }
        }
        if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(item, s, &format!("{path}[{i}]"), out);
            }
        }
    }

    /// Property names declared in the `anyOf`/`oneOf`/`allOf` branches of a schema.
    fn branch_properties<'a>(&'a self, schema: &'a Value) -> BTreeSet<&'a str> {
        ["anyOf", "oneOf", "allOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .filter_map(|b| self.resolve(b).get("properties").and_then(Value::as_object))
            .flat_map(|props| props.keys().map(String::as_str))
            .collect()
    }

    /// An instance of a schema: only required properties, or all of them.
    fn example(&self, schema: &Value, all: bool, depth: usize) -> Value {
        let schema = self.resolve(schema);
        if let Some(c) = schema.get("const") {
            return c.clone();
        }
        if let Some(e) = schema.get("enum").and_then(Value::as_array) {
            return e[0].clone();
        }
        for key in ["allOf", "oneOf", "anyOf"] {
            if let Some(branches) = schema.get(key).and_then(Value::as_array) {
                let pick = branches.iter().find(|b| self.resolve(b).get("type") != Some(&json!("null")));
                if let Some(b) = pick {
                    let mut v = self.example(b, all, depth);
                    // Properties declared beside the branches (e.g. a `type` tag) belong too.
                    if let (Value::Object(o), Some(_)) = (&mut v, schema.get("properties")) {
                        if let Value::Object(extra) = self.object_example(schema, all, depth) {
                            o.extend(extra);
                        }
                    }
                    return v;
                }
            }
        }
        let ty = match schema.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
            _ if schema.get("properties").is_some() => "object",
            _ => return json!({}),
        };
        match ty {
            "string" => json!("x"),
            "integer" => json!(1),
            "number" => json!(1.5),
            "boolean" => json!(false),
            "null" => Value::Null,
            "array" if all && depth < 4 => match schema.get("items") {
                Some(items) => json!([self.example(items, all, depth + 1)]),
                None => json!([]),
            },
            "array" => json!([]),
            _ => self.object_example(schema, all, depth),
        }
    }

    fn object_example(&self, schema: &Value, all: bool, depth: usize) -> Value {
        let mut out = Map::new();
        let required: BTreeSet<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for (k, s) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            if required.contains(k.as_str()) || (all && depth < 4) {
                out.insert(k.clone(), self.example(s, all, depth + 1));
            }
        }
        Value::Object(out)
    }
}

fn sends<T: Serialize>(definition: &str, value: &T) {
    let s = schema();
    let value = serde_json::to_value(value).unwrap();
    let mut problems = Vec::new();
    s.check(&value, s.def(definition), definition, &mut problems);
    assert!(problems.is_empty(), "{definition}: {problems:#?}\nvalue: {value}");
}

fn reads<T: DeserializeOwned>(definition: &str) {
    let s = schema();
    for all in [false, true] {
        let instance = s.example(s.def(definition), all, 0);
        if let Err(e) = serde_json::from_value::<T>(instance.clone()) {
            panic!("{definition} ({}): {e}\ninstance: {instance}", if all { "all fields" } else { "required only" });
        }
    }
}

fn full_settings() -> ThreadSettings {
    ThreadSettings {
        model: Some("m".into()),
        model_provider: Some("p".into()),
        cwd: Some("/tmp".into()),
        base_instructions: Some("b".into()),
        developer_instructions: Some("d".into()),
        sandbox: Some(SandboxMode::ReadOnly),
        approval_policy: Some(ApprovalPolicy::Untrusted),
        config: Some(serde_json::from_value(json!({"mcp_servers": {}})).unwrap()),
        dynamic_tools: vec![ToolSpec {
            name: "f".into(),
            description: "d".into(),
            input_schema: json!({"type": "object", "properties": {}}),
        }],
    }
}

/// Settings for `thread/resume` and `thread/fork`, which take no tool list (a thread keeps the
/// one it was started with).
fn resume_settings() -> ThreadSettings {
    ThreadSettings { dynamic_tools: Vec::new(), ..full_settings() }
}

#[test]
fn what_we_send_fits_the_schema() {
    sends(
        "InitializeParams",
        &InitializeParams {
            client_info: ClientInfo { name: "n".into(), version: "v".into() },
            capabilities: Some(InitializeCapabilities {
                experimental_api: true,
                opt_out_notification_methods: Some(vec!["thread/started".into()]),
            }),
        },
    );
    sends(
        "ThreadStartParams",
        &ThreadStartParams { settings: full_settings(), ephemeral: Some(true), experimental_raw_events: true },
    );
    sends(
        "ThreadInjectItemsParams",
        &ThreadInjectItemsParams {
            thread_id: "t".into(),
            items: vec![json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]})],
        },
    );
    sends("ThreadStartParams", &ThreadStartParams::default());
    sends(
        "ThreadResumeParams",
        &ThreadResumeParams { thread_id: "t".into(), settings: resume_settings(), exclude_turns: true },
    );
    sends(
        "ThreadForkParams",
        &ThreadForkParams { thread_id: "t".into(), settings: resume_settings(), exclude_turns: true },
    );
    sends("ThreadUnsubscribeParams", &ThreadIdParams { thread_id: "t".into() });
    sends("ThreadDeleteParams", &ThreadIdParams { thread_id: "t".into() });
    sends("ThreadSetNameParams", &ThreadSetNameParams { thread_id: "t".into(), name: "n".into() });
    sends(
        "ThreadListParams",
        &ThreadListParams {
            search_term: Some("n".into()),
            cursor: Some("c".into()),
            limit: Some(5),
            use_state_db_only: Some(true),
        },
    );
    sends("ThreadReadParams", &ThreadReadParams { thread_id: "t".into(), include_turns: true });
    sends("ThreadLoadedListParams", &ThreadLoadedListParams { cursor: Some("c".into()), limit: Some(5) });
    let mut turn = TurnStartParams::new(
        "t",
        vec![UserInput::text("hi"), UserInput::Image { url: "u".into() }, UserInput::LocalImage { path: "/p".into() }],
    );
    turn.model = Some("m".into());
    turn.effort = Some(ReasoningEffort::new("low").unwrap());
    turn.approval_policy = Some(ApprovalPolicy::Never);
    turn.output_schema = Some(json!({"type": "object"}));
    sends("TurnStartParams", &turn);
    sends(
        "TurnSteerParams",
        &TurnSteerParams { thread_id: "t".into(), expected_turn_id: "u".into(), input: vec![UserInput::text("x")] },
    );
    sends("TurnInterruptParams", &TurnInterruptParams { thread_id: "t".into(), turn_id: "u".into() });
    sends("ModelListParams", &ModelListParams { cursor: Some("c".into()), limit: Some(1) });
    sends("GetAccountParams", &AccountReadParams { refresh_token: false });
}

#[test]
fn the_default_policy_answers_fit_the_schema() {
    let responses = [
        ("item/commandExecution/requestApproval", "CommandExecutionRequestApprovalResponse"),
        ("item/fileChange/requestApproval", "FileChangeRequestApprovalResponse"),
        ("item/permissions/requestApproval", "PermissionsRequestApprovalResponse"),
        ("item/tool/requestUserInput", "ToolRequestUserInputResponse"),
        ("item/tool/call", "DynamicToolCallResponse"),
        ("mcpServer/elicitation/request", "McpServerElicitationRequestResponse"),
        ("execCommandApproval", "ExecCommandApprovalResponse"),
        ("applyPatchApproval", "ApplyPatchApprovalResponse"),
    ];
    for (method, definition) in responses {
        let request = ServerRequest::decode(method, None);
        let answer = DeclinePolicy::answer(&request).unwrap_or_else(|e| panic!("{method}: {e}"));
        sends(definition, &answer);
    }
    // A client's output for a call its turn waits on.
    let output = ToolOutput {
        call_id: "c".into(),
        content: vec![
            ToolContent::InputText { text: "t".into() },
            ToolContent::InputImage { image_url: "data:image/png;base64,AA==".into() },
        ],
        success: true,
    };
    sends("DynamicToolCallResponse", &output.to_response());
}

#[test]
fn tool_calls_codex_asks_are_read() {
    reads::<codex_pool_protocol::tools::DynamicToolCallParams>("DynamicToolCallParams");
}

#[test]
fn what_we_read_decodes_from_the_schema() {
    reads::<InitializeResponse>("InitializeResponse");
    reads::<ThreadStartResponse>("ThreadStartResponse");
    reads::<ThreadResponse>("ThreadResumeResponse");
    reads::<ThreadResponse>("ThreadForkResponse");
    reads::<ThreadUnsubscribeResponse>("ThreadUnsubscribeResponse");
    reads::<ThreadDeleteResponse>("ThreadDeleteResponse");
    reads::<ThreadSetNameResponse>("ThreadSetNameResponse");
    reads::<ThreadListResponse>("ThreadListResponse");
    reads::<ThreadReadResponse>("ThreadReadResponse");
    reads::<ThreadLoadedListResponse>("ThreadLoadedListResponse");
    reads::<TurnStartResponse>("TurnStartResponse");
    reads::<TurnSteerResponse>("TurnSteerResponse");
    reads::<EmptyResponse>("TurnInterruptResponse");
    reads::<EmptyResponse>("ThreadInjectItemsResponse");
    reads::<ModelListResponse>("ModelListResponse");
    reads::<AccountReadResponse>("GetAccountResponse");
}

#[test]
fn typed_notifications_decode_from_the_schema() {
    let s = schema();
    let cases = [
        (nm::THREAD_STARTED, "ThreadStartedNotification"),
        (nm::THREAD_CLOSED, "ThreadClosedNotification"),
        (nm::TURN_STARTED, "TurnStartedNotification"),
        (nm::TURN_COMPLETED, "TurnCompletedNotification"),
        (nm::ITEM_STARTED, "ItemStartedNotification"),
        (nm::ITEM_COMPLETED, "ItemCompletedNotification"),
        (nm::AGENT_MESSAGE_DELTA, "AgentMessageDeltaNotification"),
        (nm::REASONING_TEXT_DELTA, "ReasoningTextDeltaNotification"),
        (nm::REASONING_SUMMARY_TEXT_DELTA, "ReasoningSummaryTextDeltaNotification"),
        (nm::TOKEN_USAGE_UPDATED, "ThreadTokenUsageUpdatedNotification"),
        (nm::ERROR, "ErrorNotification"),
        (nm::RAW_RESPONSE_ITEM_COMPLETED, "RawResponseItemCompletedNotification"),
    ];
    for (method, definition) in cases {
        // The raw item notification is internal: its params are in the schema, its method is not
        // listed (the pool's rebuild tests against the real binary cover it).
        if method != nm::RAW_RESPONSE_ITEM_COMPLETED {
            assert!(s.notification_methods.contains(method), "codex no longer sends {method}");
        }
        for all in [false, true] {
            let params = s.example(s.def(definition), all, 0);
            let raw = serde_json::value::to_raw_value(&params).unwrap();
            let decoded = ServerNotification::decode(method, Some(&raw));
            assert!(
                !matches!(decoded, ServerNotification::Other { .. }),
                "{method} did not decode into its typed form from {params}"
            );
            assert!(decoded.thread_id().is_some(), "{method}: no thread id");
        }
    }
}

#[test]
fn every_method_we_use_exists_and_every_server_request_is_known() {
    let s = schema();
    for method in [
        Initialize::METHOD,
        ThreadStart::METHOD,
        ThreadResume::METHOD,
        ThreadFork::METHOD,
        ThreadInjectItems::METHOD,
        ThreadUnsubscribe::METHOD,
        ThreadDelete::METHOD,
        ThreadSetName::METHOD,
        ThreadList::METHOD,
        ThreadRead::METHOD,
        ThreadLoadedList::METHOD,
        TurnStart::METHOD,
        TurnSteer::METHOD,
        TurnInterrupt::METHOD,
        ModelList::METHOD,
        AccountRead::METHOD,
    ] {
        assert!(s.client_methods.contains(method), "codex no longer accepts {method}");
    }
    // A server request we do not know would be answered "method not found": decide on a policy
    // answer for it before bumping the pinned version.
    for method in &s.server_request_methods {
        assert_ne!(ServerRequestKind::of(method), ServerRequestKind::Unknown, "new server request {method}");
    }
}

/// What moved from 0.169.0 to 0.171.0 that the pool reads or answers (`scripts/codex-schema-diff`
/// lists all of it).
#[test]
fn what_moved_in_0_171_0() {
    let s = schema();
    // codex no longer asks the client's clock. The policy still answers `currentTime/read`: an
    // older codex (accepted with CODEX_POOL_ALLOW_ANY_CODEX_VERSION=1, as `bench` does for
    // 0.169.0) may send it, and answering a request nobody sends costs nothing.
    assert!(!s.server_request_methods.contains("currentTime/read"));
    assert!(s.root["definitions"]["v2"].get("CurrentTimeReadResponse").is_none());
    // An answer's moderation: `display` is a union tagged by `mode` (was `{action, blockType}`).
    reads::<codex_pool_protocol::AgentMessageModeration>("AgentMessageModeration");
    let display = s.def("AgentMessageDisplay");
    let mut modes = Vec::new();
    for branch in display["oneOf"].as_array().expect("AgentMessageDisplay is a union") {
        let mode = branch["properties"]["mode"]["enum"][0].as_str().unwrap().to_owned();
        let mut instance = s.example(branch, true, 0);
        let moderation = json!({"moderated": true, "display": instance.take()});
        let item = json!({"type": "agentMessage", "id": "i", "text": "t", "moderation": moderation});
        let withheld = codex_pool_protocol::AgentMessageModeration::withheld_in(&item).map(|w| w.as_str());
        assert_eq!(withheld, (mode != "show").then_some(mode.as_str()), "{item}");
        modes.push(mode);
    }
    assert_eq!(modes, ["show", "hide", "block"]);
    let message = s.def("ThreadItem")["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["properties"]["type"]["enum"][0] == "agentMessage")
        .unwrap();
    assert!(message["properties"].get("moderation").is_some(), "agentMessage lost its moderation");
}

#[test]
fn the_checker_catches_renames_wrong_types_and_missing_fields() {
    let s = schema();
    let def = s.def("TurnInterruptParams");
    for bad in
        [json!({"threadID": "t", "turnId": "u"}), json!({"threadId": 5, "turnId": "u"}), json!({"threadId": "t"})]
    {
        let mut problems = Vec::new();
        s.check(&bad, def, "TurnInterruptParams", &mut problems);
        assert!(!problems.is_empty(), "{bad} passed");
    }
}
