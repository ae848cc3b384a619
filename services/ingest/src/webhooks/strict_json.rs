//! JSON as a provider's event is read: a key given twice in one object is refused.
//! `serde_json::Value` keeps the last of two `payment_id`s silently, so a body could
//! carry one value to a reader that takes the first and another to paytrack; the
//! typed parsers this replaced refused the duplicate, and so does this one. Depth
//! stays bounded by serde_json's recursion limit.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `body` as JSON, refusing a key repeated within one object.
pub fn parse(body: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(body).map(|strict| strict.0)
}

/// A JSON value whose objects have no repeated key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Strict::deserialize(deserializer).map(|s| s.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_repeated_in_one_object_is_refused_at_any_depth() {
        for bad in [
            r#"{"payment_id":"a","payment_id":"b"}"#,
            r#"{"data":{"x":1,"y":2,"x":3}}"#,
            r#"[{"k":1},{"k":1,"k":1}]"#,
        ] {
            let error = parse(bad.as_bytes()).expect_err(bad);
            assert!(error.to_string().contains("duplicate key"), "{error}");
        }
    }

    #[test]
    fn anything_else_parses_as_serde_json_does() {
        for good in [
            r#"{"a":{"a":{"a":1}},"b":[1,-2,3.5,true,null,"s"],"c":{}}"#,
            r#"{"big":18446744073709551615,"neg":-9223372036854775808,"x":"\u0000"}"#,
            "[]",
            "\"s\"",
        ] {
            let expected: Value = serde_json::from_str(good).unwrap();
            assert_eq!(parse(good.as_bytes()).unwrap(), expected, "{good}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(deep.as_bytes()).is_err(), "depth stays bounded");
    }
}
