//! Moving JSON-shaped values in and out of Automerge objects.
//!
//! Events and the hall configuration are typed Rust structs (serde) stored as real Automerge maps and lists, so any
//! Automerge implementation can read a case document field by field. Reading accepts what other implementations write:
//! JavaScript stores a plain string as a Text object (NOTES.md), counters and timestamps read back as numbers.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value as AmValue};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this in a stored value is cut off: our own events nest at most three levels, and a crafted
/// document must not make a reader recurse without bound.
pub const DEPTH_MAX: usize = 16;

fn scalar(value: &Value) -> Option<ScalarValue> {
    Some(match value {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ScalarValue::Int(i),
            (None, Some(u), _) => ScalarValue::Uint(u),
            (_, _, Some(f)) => ScalarValue::F64(f),
            _ => ScalarValue::Null,
        },
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// Writes `value` at `key` of the map `obj`.
pub fn put<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Value,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Value::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            fill_list(tx, &list, items)
        }
        Value::Object(map) => {
            let child = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in map {
                put(tx, &child, k, v)?;
            }
            Ok(())
        }
        _ => tx.put(obj, key, scalar(value).unwrap_or(ScalarValue::Null)),
    }
}

/// Appends `value` to the list `list`.
pub fn push<T: Transactable>(tx: &mut T, list: &ObjId, value: &Value) -> Result<(), automerge::AutomergeError> {
    let index = tx.length(list);
    match value {
        Value::Array(items) => {
            let child = tx.insert_object(list, index, ObjType::List)?;
            fill_list(tx, &child, items)
        }
        Value::Object(map) => {
            let child = tx.insert_object(list, index, ObjType::Map)?;
            for (k, v) in map {
                put(tx, &child, k, v)?;
            }
            Ok(())
        }
        _ => tx.insert(list, index, scalar(value).unwrap_or(ScalarValue::Null)),
    }
}

fn fill_list<T: Transactable>(tx: &mut T, list: &ObjId, items: &[Value]) -> Result<(), automerge::AutomergeError> {
    for item in items {
        push(tx, list, item)?;
    }
    Ok(())
}

/// Updates the map `obj` in place to equal `target`: unchanged keys are not written (so concurrent edits of other keys
/// merge), changed scalars are put, nested maps are updated recursively, lists are replaced whole, missing keys deleted.
pub fn update_map<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    target: &Map<String, Value>,
) -> Result<(), automerge::AutomergeError> {
    let existing: Vec<String> = tx.keys(obj).collect();
    for key in existing.iter().filter(|k| !target.contains_key(k.as_str())) {
        tx.delete(obj, key.as_str())?;
    }
    for (key, value) in target {
        let current = tx.get(obj, key.as_str())?;
        match (value, current) {
            (Value::Object(map), Some((AmValue::Object(ObjType::Map), child))) => update_map(tx, &child, map)?,
            (_, Some(_)) if read_prop(tx, obj, key).as_ref() == Some(value) => {}
            _ => put(tx, obj, key, value)?,
        }
    }
    Ok(())
}

/// Reads the value at `key` of the map `obj` (the deterministic winner if there are concurrent values).
pub fn read_prop<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Option<Value> {
    let (value, id) = doc.get(obj, key).ok()??;
    Some(to_json(doc, value, &id, 0))
}

/// Reads a whole object as JSON.
pub fn read_obj<D: ReadDoc>(doc: &D, obj: &ObjId) -> Value {
    match doc.object_type(obj) {
        Ok(object_type) => to_json(doc, AmValue::Object(object_type), obj, 0),
        Err(_) => Value::Null,
    }
}

/// Converts one Automerge value (and, for objects, everything below it) to JSON.
pub fn to_json<D: ReadDoc>(doc: &D, value: AmValue<'_>, id: &ObjId, depth: usize) -> Value {
    match value {
        AmValue::Scalar(scalar) => scalar_to_json(&scalar),
        _ if depth >= DEPTH_MAX => Value::Null,
        AmValue::Object(ObjType::Map | ObjType::Table) => {
            let mut map = Map::new();
            for item in doc.map_range(id, ..) {
                let child_id = item.id();
                map.insert(item.key.to_string(), to_json(doc, item.value.into(), &child_id, depth + 1));
            }
            Value::Object(map)
        }
        AmValue::Object(ObjType::List) => Value::Array(
            doc.list_range(id, ..)
                .map(|item| {
                    let child_id = item.id();
                    to_json(doc, item.value.into(), &child_id, depth + 1)
                })
                .collect(),
        ),
        AmValue::Object(ObjType::Text) => doc.text(id).map(Value::String).unwrap_or(Value::Null),
    }
}

pub fn scalar_to_json(scalar: &ScalarValue) -> Value {
    match scalar {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Value::Number((*i).into()),
        ScalarValue::Uint(u) => Value::Number((*u).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ScalarValue::Counter(c) => Value::Number(i64::from(c).into()),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } | ScalarValue::Null => Value::Null,
    }
}
