//! `strata inspect` and `strata image inspect`: Docker-shaped JSON (an array, 4-space indent)
//! or `--format` per object.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use strata_runtime::store::{Store, StoreError};

use super::{ExitStatus, Global};
use crate::template::Template;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Return JSON for specified type (image or container)
    #[arg(long = "type")]
    kind: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short, long)]
    size: bool,
    /// NAME|ID [NAME|ID...]
    #[arg(required = true, value_name = "NAME|ID")]
    names: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// IMAGE [IMAGE...]
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

/// Print the objects found, as a JSON array or one `--format` line each.
pub(crate) fn print(objects: &[Value], format: Option<&str>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format.filter(|f| !f.is_empty()) {
        Some(f) => {
            let f = f.replace("\\t", "\t").replace("\\n", "\n");
            let t = Template::parse(if f == "json" { "{{json .}}" } else { &f })?;
            for o in objects {
                writeln!(out, "{}", t.render(o)?)?;
            }
        }
        None => {
            out.write_all(&docker_json(objects)?)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// JSON as `docker inspect` prints it: 4-space indent, and `<`, `>`, `&` escaped as Go's
/// encoder does (`\u003c`, `\u003e`, `\u0026`).
pub fn docker_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let fmt = GoFormatter(serde_json::ser::PrettyFormatter::with_indent(b"    "));
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser)?;
    Ok(buf)
}

struct GoFormatter<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for GoFormatter<'_> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut last = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[last..i])?;
            w.write_all(esc.as_bytes())?;
            last = i + 1;
        }
        w.write_all(&fragment.as_bytes()[last..])
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Serialize keeping struct field order (serde_json's `Value` would sort keys).
fn ordered<T: Serialize>(v: &T) -> Result<Value> {
    let s = serde_json::to_string(v)?;
    Ok(serde_json::from_str(&s)?)
}

/// Inspect JSON of an image, for other verbs (e.g. `inspect` of mixed objects).
fn image_value(global: &Global, store: &Store, name: &str) -> Result<Option<(Value, String)>> {
    match store.resolve(name) {
        Ok(img) => {
            let ins = global.engine().image_inspect(&img)?;
            Ok(Some((ordered(&ins)?, serde_json::to_string(&ins)?)))
        }
        Err(StoreError::NoSuchImage(_)) | Err(StoreError::Reference(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Inspect JSON of a container (by name, id or id prefix), or `None` when there is none.
fn container_value(global: &Global, name: &str, size: bool) -> Result<Option<(Value, String)>> {
    use strata_runtime::container::{inspect, ContainerError};
    match global.containers().lookup(name) {
        Ok(c) => {
            let mut v = inspect::to_json(&c);
            if size {
                let (rw, root) = global.engine().container_size(&c)?;
                v["SizeRw"] = rw.into();
                v["SizeRootFs"] = root.into();
            }
            let text = serde_json::to_string(&v)?;
            Ok(Some((v, text)))
        }
        Err(ContainerError::NoSuchContainer(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn emit(found: Vec<(Value, String)>, format: Option<&str>, failed: bool) -> Result<()> {
    if format.filter(|f| !f.is_empty()).is_some() {
        let values: Vec<Value> = found.into_iter().map(|(v, _)| v).collect();
        print(&values, format)?;
    } else {
        // Keep Docker's field order: re-read the ordered JSON texts without sorting keys.
        let reparsed: Vec<OrderedValue> = found
            .iter()
            .map(|(_, s)| serde_json::from_str(s))
            .collect::<Result<_, _>>()?;
        let mut out = std::io::stdout().lock();
        out.write_all(&docker_json(&reparsed)?)?;
        writeln!(out)?;
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(())
}

/// A JSON value that keeps object key order when read and written again.
#[derive(Debug)]
enum OrderedValue {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<OrderedValue>),
    Object(Vec<(String, OrderedValue)>),
}

impl Serialize for OrderedValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            OrderedValue::Null => s.serialize_unit(),
            OrderedValue::Bool(b) => s.serialize_bool(*b),
            OrderedValue::Number(n) => n.serialize(s),
            OrderedValue::String(x) => s.serialize_str(x),
            OrderedValue::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            OrderedValue::Object(o) => {
                let mut m = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for OrderedValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<OrderedValue, E> {
                Ok(OrderedValue::Null)
            }
            fn visit_none<E>(self) -> Result<OrderedValue, E> {
                Ok(OrderedValue::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<OrderedValue, E> {
                Ok(OrderedValue::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<OrderedValue, E> {
                Ok(OrderedValue::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<OrderedValue, E> {
                Ok(OrderedValue::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<OrderedValue, E> {
                Ok(serde_json::Number::from_f64(n)
                    .map(OrderedValue::Number)
                    .unwrap_or(OrderedValue::Null))
            }
            fn visit_str<E>(self, s: &str) -> Result<OrderedValue, E> {
                Ok(OrderedValue::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<OrderedValue, E> {
                Ok(OrderedValue::String(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<OrderedValue, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(OrderedValue::Array(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<OrderedValue, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry()? {
                    v.push((k, x));
                }
                Ok(OrderedValue::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `strata image inspect`: images only; `Error: No such image: X` per miss.
pub fn run_image(global: &Global, args: ImageArgs) -> Result<()> {
    let store = global.store()?;
    let mut found = Vec::new();
    let mut failed = false;
    for name in &args.images {
        match image_value(global, &store, name)? {
            Some(v) => found.push(v),
            None => {
                eprintln!("Error: No such image: {name}");
                failed = true;
            }
        }
    }
    emit(found, args.format.as_deref(), failed)
}

/// `strata inspect`: images, then containers; `Error: No such object: X` per miss.
pub fn run(global: &Global, args: Args) -> Result<()> {
    let store = global.store()?;
    let mut found = Vec::new();
    let mut failed = false;
    let want_image = args.kind.as_deref().is_none_or(|k| k == "image");
    let want_container = args.kind.as_deref().is_none_or(|k| k == "container");
    if let Some(k) = args.kind.as_deref() {
        if k != "image" && k != "container" {
            anyhow::bail!("\"{k}\" is not a valid value for --type");
        }
    }
    for name in &args.names {
        // Docker tries containers first.
        if want_container {
            if let Some(v) = container_value(global, name, args.size)? {
                found.push(v);
                continue;
            }
        }
        if want_image {
            if let Some(v) = image_value(global, &store, name)? {
                found.push(v);
                continue;
            }
        }
        let what = if args.kind.as_deref() == Some("image") {
            "image"
        } else if args.kind.as_deref() == Some("container") {
            "container"
        } else {
            "object"
        };
        eprintln!("Error: No such {what}: {name}");
        failed = true;
    }
    emit(found, args.format.as_deref(), failed)
}
