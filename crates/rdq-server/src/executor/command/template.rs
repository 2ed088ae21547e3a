//! Placeholders in argv elements: parsed once when the executor is built,
//! filled for every job.
//!
//! Grammar of one element: literal text, `{{` for `{`, `}}` for `}`, and
//! placeholders `{id}`, `{attempt}`, `{queue}`, `{kind}`, `{args}` (the whole
//! arguments as compact JSON) and `{args.a.b}` (a field; a segment that is a
//! number indexes an array). A string value is inserted as is; any other
//! value as its compact JSON text. Filling never goes through a shell: the
//! result is exactly one argv element.

use rdq_store::JobContext;
use serde_json::Value;

/// One argv element with its placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Id,
    Attempt,
    Queue,
    Kind,
    /// A path into the args; empty for the whole args.
    Args(Vec<String>),
}

const KNOWN: &str = "{id}, {attempt}, {queue}, {kind}, {args}, {args.FIELD} (nested: {args.a.b})";

impl Template {
    /// Parses one element; the error says what is wrong and how to fix it.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => break,
                            c => name.push(c),
                        }
                    }
                    if !closed {
                        return Err(format!(
                            "the '{{' at byte {at} is not closed by '}}'; \
                             write '{{{{' for a literal '{{'"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::parse_name(&name)?);
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(format!(
                        "the '}}' at byte {at} closes nothing; write '}}}}' for a literal '}}'"
                    ));
                }
                c => literal.push(c),
            }
        }
        if literal.contains('\0') {
            return Err("it contains a NUL byte, which no argument can hold".to_owned());
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The element for this job. The error names the placeholder.
    pub(super) fn fill(&self, args: &Value, ctx: &JobContext) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Id => out.push_str(&ctx.id.0.to_string()),
                Part::Attempt => out.push_str(&ctx.attempt.to_string()),
                Part::Queue => out.push_str(&ctx.queue),
                Part::Kind => out.push_str(&ctx.kind),
                Part::Args(path) => {
                    let value = lookup(args, path).ok_or_else(|| {
                        format!(
                            "placeholder {{args.{}}}: the job's args have no such field",
                            path.join(".")
                        )
                    })?;
                    match value {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        if out.contains('\0') {
            return Err("the value contains a NUL byte, which no argument can hold".to_owned());
        }
        Ok(out)
    }
}

impl Part {
    fn parse_name(name: &str) -> Result<Part, String> {
        match name {
            "id" => return Ok(Part::Id),
            "attempt" => return Ok(Part::Attempt),
            "queue" => return Ok(Part::Queue),
            "kind" => return Ok(Part::Kind),
            "args" => return Ok(Part::Args(Vec::new())),
            _ => {}
        }
        let Some(path) = name.strip_prefix("args.") else {
            return Err(format!("unknown placeholder {{{name}}}; known: {KNOWN}"));
        };
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!(
                "placeholder {{{name}}} has an empty field name; write {{args.a.b}}"
            ));
        }
        Ok(Part::Args(path))
    }
}

fn lookup<'v>(args: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(args, |value, segment| match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdq_store::{JobId, Timestamp};
    use serde_json::json;

    fn ctx() -> JobContext {
        JobContext {
            id: JobId(42),
            queue: "thumbs".to_owned(),
            kind: "command".to_owned(),
            attempt: 2,
            max_attempts: 5,
            priority: 0,
            queued_at: Timestamp(0),
        }
    }

    fn fill(template: &str, args: &Value) -> Result<String, String> {
        Template::parse(template)?.fill(args, &ctx())
    }

    #[test]
    fn literal_only() {
        assert_eq!(fill("--verbose", &json!({})).unwrap(), "--verbose");
        assert_eq!(fill("", &json!({})).unwrap(), "");
    }

    #[test]
    fn job_fields() {
        let got = fill("{queue}/{kind}/{id}#{attempt}", &json!({})).unwrap();
        assert_eq!(got, "thumbs/command/42#2");
    }

    #[test]
    fn nested_fields_and_array_indexes() {
        let args = json!({"user": {"name": "ann", "tags": ["a", "b"]}});
        assert_eq!(
            fill("--user={args.user.name}", &args).unwrap(),
            "--user=ann"
        );
        assert_eq!(fill("{args.user.tags.1}", &args).unwrap(), "b");
    }

    #[test]
    fn non_string_values_are_json_text() {
        let args =
            json!({"n": 3, "f": 1.5, "b": true, "z": null, "o": {"k": [1, "x"]}, "a": [1, 2]});
        assert_eq!(fill("{args.n}", &args).unwrap(), "3");
        assert_eq!(fill("{args.f}", &args).unwrap(), "1.5");
        assert_eq!(fill("{args.b}", &args).unwrap(), "true");
        assert_eq!(fill("{args.z}", &args).unwrap(), "null");
        assert_eq!(fill("{args.o}", &args).unwrap(), r#"{"k":[1,"x"]}"#);
        assert_eq!(fill("{args.a}", &args).unwrap(), "[1,2]");
    }

    #[test]
    fn whole_args() {
        let args = json!({"a": "x y"});
        assert_eq!(fill("{args}", &args).unwrap(), r#"{"a":"x y"}"#);
        assert_eq!(fill("{args}", &json!("plain")).unwrap(), "plain");
    }

    #[test]
    fn strings_are_verbatim() {
        let args = json!({"s": "$(touch pwned); rm -rf x \"'{id}"});
        assert_eq!(
            fill("{args.s}", &args).unwrap(),
            "$(touch pwned); rm -rf x \"'{id}"
        );
    }

    #[test]
    fn missing_field_names_the_placeholder() {
        let args = json!({"user": {"name": "ann"}, "list": [1]});
        for (template, placeholder) in [
            ("{args.nope}", "{args.nope}"),
            ("x{args.user.age}y", "{args.user.age}"),
            ("{args.user.name.first}", "{args.user.name.first}"),
            ("{args.list.5}", "{args.list.5}"),
            ("{args.list.x}", "{args.list.x}"),
        ] {
            let e = fill(template, &args).unwrap_err();
            assert!(e.contains(placeholder), "{template}: {e}");
            assert!(e.contains("no such field"), "{template}: {e}");
        }
        let e = fill("{args.a}", &json!(7)).unwrap_err();
        assert!(e.contains("{args.a}"), "{e}");
    }

    #[test]
    fn escapes() {
        assert_eq!(fill("{{id}}", &json!({})).unwrap(), "{id}");
        assert_eq!(fill("{{{id}}}", &json!({})).unwrap(), "{42}");
        assert_eq!(fill("a}}b{{c", &json!({})).unwrap(), "a}b{c");
        assert_eq!(fill("{{args.x}}", &json!({})).unwrap(), "{args.x}");
    }

    #[test]
    fn malformed_templates_say_what_to_fix() {
        for (template, hint) in [
            ("{id", "not closed"),
            ("{", "not closed"),
            ("a{b{id}}", "not closed"),
            ("}", "closes nothing"),
            ("x}y", "closes nothing"),
            ("{}", "unknown placeholder {}"),
            ("{ id }", "unknown placeholder { id }"),
            ("{user}", "unknown placeholder {user}"),
            ("{args.}", "empty field name"),
            ("{args..a}", "empty field name"),
            ("{args.a.}", "empty field name"),
            ("a\0b", "NUL"),
        ] {
            let e = Template::parse(template).unwrap_err();
            assert!(e.contains(hint), "{template:?}: {e}");
        }
    }

    #[test]
    fn nul_in_a_value_is_refused() {
        let e = fill("{args.s}", &json!({"s": "a\u{0}b"})).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(fill("é{args.k}ü", &json!({"k": "→"})).unwrap(), "é→ü");
    }
}
