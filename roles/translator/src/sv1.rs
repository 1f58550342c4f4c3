//! Sv1 on the wire: newline-delimited JSON-RPC, each line capped, parsed with `sv1_api`.

use serde_json::Value;
use stratum_core::sv1_api::json_rpc::{self, JsonRpcError, Response};
use stratum_core::sv1_api::methods::{Client2Server, MethodError};

/// A line from a miner, classified.
#[derive(Debug)]
pub enum Incoming {
    /// A request `sv1_api` understands.
    Request(Client2Server),
    /// `mining.suggest_difficulty`; `sv1_api` drops its parameter, so it is read here.
    SuggestDifficulty { id: Option<u64>, difficulty: f64 },
    /// A request with an id that cannot be served: answer it with an error.
    Refuse { id: u64, reason: String },
    /// A notification we do not act on.
    Ignore(String),
    /// Not JSON-RPC at all: the connection is closed.
    Malformed(String),
}

pub fn parse(line: &str) -> Incoming {
    let message: json_rpc::Message = match serde_json::from_str(line) {
        Ok(message) => message,
        Err(error) => return Incoming::Malformed(format!("not JSON-RPC: {error}")),
    };
    let (id, method, params) = match &message {
        json_rpc::Message::StandardRequest(request) => (
            Some(request.id),
            request.method.clone(),
            request.params.clone(),
        ),
        json_rpc::Message::Notification(notification) => (
            None,
            notification.method.clone(),
            notification.params.clone(),
        ),
        json_rpc::Message::OkResponse(_) | json_rpc::Message::ErrorResponse(_) => {
            return Incoming::Ignore("a response (the translator sends no requests)".into())
        }
    };
    if method == "mining.suggest_difficulty" {
        return match params.get(0).and_then(Value::as_f64) {
            Some(difficulty) if difficulty.is_finite() && difficulty > 0.0 => {
                Incoming::SuggestDifficulty { id, difficulty }
            }
            _ => refuse_or_ignore(
                id,
                "mining.suggest_difficulty needs a positive number".into(),
            ),
        };
    }
    match Client2Server::try_from(message) {
        Ok(request) => Incoming::Request(request),
        Err(MethodError::MethodNotFound(method)) => {
            refuse_or_ignore(id, format!("unknown method {method:?}"))
        }
        Err(MethodError::ParsingMethodError((error, _))) => {
            refuse_or_ignore(id, format!("bad parameters for {method}: {error:?}"))
        }
        Err(other) => refuse_or_ignore(id, format!("unexpected message: {other:?}")),
    }
}

fn refuse_or_ignore(id: Option<u64>, reason: String) -> Incoming {
    match id {
        Some(id) => Incoming::Refuse { id, reason },
        None => Incoming::Ignore(reason),
    }
}

/// An error response in the Sv1 `[code, message, null]` form.
pub fn error_response(id: u64, code: i32, message: impl Into<String>) -> Response {
    Response {
        id,
        result: Value::Null,
        error: Some(JsonRpcError {
            code,
            message: message.into(),
            data: None,
        }),
    }
}

/// A message as one line to send.
pub fn encode(message: &json_rpc::Message) -> String {
    let mut line = serde_json::to_string(message).unwrap_or_else(|_| "{}".to_owned());
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Whatever a miner sends, classification answers and never panics.
        #[test]
        fn any_line_is_classified(line in ".{0,300}") {
            let _ = parse(&line);
        }

        /// Requests with known methods and arbitrary parameters are served or refused.
        #[test]
        fn known_methods_with_any_params_never_panic(
            method in proptest::sample::select(vec![
                "mining.subscribe", "mining.authorize", "mining.configure", "mining.submit",
                "mining.suggest_difficulty", "mining.extranonce.subscribe", "mining.notify",
            ]),
            params in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<i64>().prop_map(serde_json::Value::from),
                    proptest::prelude::any::<f64>().prop_map(serde_json::Value::from),
                    "[0-9a-fA-F]{0,80}".prop_map(serde_json::Value::from),
                    ".{0,20}".prop_map(serde_json::Value::from),
                    proptest::prelude::Just(serde_json::Value::Null),
                    proptest::prelude::Just(serde_json::json!([["version-rolling"], {"version-rolling.mask": "zz"}])),
                ],
                0..8,
            ),
        ) {
            let line = serde_json::json!({"id": 7, "method": method, "params": params}).to_string();
            let _ = parse(&line);
        }
    }

    #[test]
    fn classifies_requests() {
        assert!(matches!(
            parse(r#"{"id":1,"method":"mining.subscribe","params":["bitaxe/2.0"]}"#),
            Incoming::Request(Client2Server::Subscribe(_))
        ));
        assert!(matches!(
            parse(r#"{"id":3,"method":"mining.suggest_difficulty","params":[512]}"#),
            Incoming::SuggestDifficulty { id: Some(3), difficulty } if difficulty == 512.0
        ));
        assert!(matches!(
            parse(r#"{"id":4,"method":"mining.frobnicate","params":[]}"#),
            Incoming::Refuse { id: 4, .. }
        ));
        assert!(matches!(
            parse(r#"{"id":5,"method":"mining.authorize","params":[1,2,3]}"#),
            Incoming::Refuse { id: 5, .. }
        ));
        assert!(matches!(parse("{not json"), Incoming::Malformed(_)));
        assert!(matches!(parse("[1,2,3]"), Incoming::Malformed(_)));
        assert!(matches!(
            parse(r#"{"method":"mining.whatever","params":[]}"#),
            Incoming::Ignore(_)
        ));
    }
}
