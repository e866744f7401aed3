//! The VNF catalog: service definitions in TOML (documented in
//! `docs/domains.md`), one file per service, and their instantiation into
//! [`DomainSpec`]s.
//!
//! [`parse_service`] checks one file; every error carries the file name, the
//! 1-based line and column of the offending value and its key (e.g.
//! `health.timeout`). [`load_dir`] loads every `*.toml` of a directory, with
//! the config templates they name.
//!
//! Commands, UDP health payloads, health commands and config templates may
//! contain placeholders: `{name}` (the instance), `{address}` (its veth
//! address), `{config_dir}`, `{run_dir}`, `{vip}` (if the service has one),
//! `{port}` (its first port), `{param.X}` (a parameter, default in `[params]`,
//! overridable per instance) and `{expand.X}` (a list parameter expanded line
//! by line, see [`Expansion`]). A placeholder is `{` + a lowercase name + `}`;
//! any other brace is literal text, and `{{` is a literal `{` where one must be
//! followed by a lowercase name. An unknown placeholder is an error.

use crate::file::{backticked, key_on_line, line_col, one_line};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::{Component, Path};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::domain::{
    CpuSpec, DomainErrorKind, DomainKind, DomainSpec, HealthCheck, HealthKind, Isolation, NetAttach, RestartPolicy,
    domain_name_problem,
};
use crate::topology::{self, MIN_MEMORY, SERVICE_VIP_POOL};
use crate::units::{self, UnitError};

/// Transport protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port the service listens on (on its address and its VIP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortDef {
    /// `tcp` or `udp`.
    pub proto: Proto,
    /// 1..=65535.
    pub port: u16,
}

/// A list parameter expanded into lines: the parameter's value is split on
/// spaces and commas into `KEY=VALUE` entries (`=VALUE` optional), and `item`
/// is rendered once per entry with `{key}` and `{value}`; the lines are joined
/// with newlines into `{expand.NAME}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expansion {
    /// The parameter holding the list.
    pub param: String,
    /// The line template, with `{key}` and `{value}`.
    pub item: String,
}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// Service name (like a domain name; instances are usually `NAME-N`).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// How instances are isolated.
    pub isolation: Isolation,
    /// Program and arguments, with placeholders.
    pub command: Vec<String>,
    /// Ports it listens on.
    pub ports: Vec<PortDef>,
    /// Service VIP, inside 10.255.0.0/16.
    pub vip: Option<Ipv4Addr>,
    /// CPU of each instance.
    pub cpu: Option<CpuSpec>,
    /// Memory limit of each instance, in bytes.
    pub memory: Option<u64>,
    /// Health probe, with placeholders in a UDP payload or a command.
    pub health: Option<HealthCheck>,
    /// Restart policy of each instance (default `on-failure:3`).
    pub restart: RestartPolicy,
    /// Parameters and their defaults.
    pub params: BTreeMap<String, String>,
    /// List parameters expanded into lines (`{expand.NAME}`).
    pub expand: BTreeMap<String, Expansion>,
    /// Config template, relative to the catalog directory; rendered into
    /// `{config_dir}/` under its file name without `.tmpl`.
    pub config_template: Option<String>,
}

/// Where an instance keeps its files; chosen by the daemon (host paths are
/// parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceDirs {
    /// Holds the rendered config (`{config_dir}`).
    pub config_dir: String,
    /// Holds pid files and sockets (`{run_dir}`).
    pub run_dir: String,
}

/// Every service of a catalog directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// Services by name.
    pub services: BTreeMap<String, ServiceDef>,
    /// Text of each service's config template, by service name.
    pub templates: BTreeMap<String, String>,
}

impl Catalog {
    /// The service called `name`.
    pub fn get(&self, name: &str) -> Result<&ServiceDef, CatalogError> {
        self.services.get(name).ok_or_else(|| {
            let names = self.services.keys().map(String::as_str);
            let kind = CatalogErrorKind::UnknownService {
                name: name.to_string(),
                known: self.services.keys().cloned().collect(),
                suggestion: topology::closest(name, names).map(str::to_string),
            };
            CatalogError::new("catalog", kind)
        })
    }

    /// The rendered config file of `service` for an instance with `vars`
    /// ([`ServiceDef::vars`]), as (file name, text); `None` if it has no template.
    pub fn render_config(
        &self,
        service: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<Option<(String, String)>, CatalogError> {
        let def = self.get(service)?;
        let (Some(name), Some(text)) = (def.config_file_name(), self.templates.get(service)) else {
            return Ok(None);
        };
        Ok(Some((name, def.render_template(text, vars)?)))
    }
}

/// Allowed characters in parameter values besides ASCII letters and digits:
/// values end up in commands and config files, so no quotes, braces,
/// semicolons or backslashes.
const PARAM_PUNCT: &str = " ._:@+/=,-";

fn param_value_problem(v: &str) -> Option<char> {
    v.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || PARAM_PUNCT.contains(*c)))
}

fn param_name_ok(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_lowercase())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// A piece of a text with placeholders.
enum Piece<'a> {
    Text(&'a str),
    /// Byte offset of the `{` and the name.
    Placeholder(usize, &'a str),
}

fn pieces(text: &str) -> Vec<Piece<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if b[i] == b'{' {
            if b.get(i + 1) == Some(&b'{') {
                out.push(Piece::Text(&text[start..=i]));
                i += 2;
                start = i;
                continue;
            }
            if b.get(i + 1).is_some_and(u8::is_ascii_lowercase) {
                let end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'.'))
                    .map(|e| i + 1 + e);
                if let Some(e) = end
                    && b[e] == b'}'
                {
                    out.push(Piece::Text(&text[start..i]));
                    out.push(Piece::Placeholder(i, &text[i + 1..e]));
                    i = e + 1;
                    start = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push(Piece::Text(&text[start..]));
    out
}

/// The first placeholder of `text` not in `known`: (offset, name).
fn unknown_placeholder<'a>(text: &'a str, known: &[String]) -> Option<(usize, &'a str)> {
    pieces(text).into_iter().find_map(|p| match p {
        Piece::Placeholder(at, name) if !known.iter().any(|k| k == name) => Some((at, name)),
        _ => None,
    })
}

/// Substitutes every placeholder; the error is the first unknown one.
fn render(text: &str, vars: &BTreeMap<String, String>) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for p in pieces(text) {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(at, name) => match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err((at, name.to_string())),
            },
        }
    }
    Ok(out)
}

fn unknown_placeholder_kind(name: &str, known: Vec<String>) -> CatalogErrorKind {
    let suggestion = topology::closest(name, known.iter().map(String::as_str)).map(str::to_string);
    CatalogErrorKind::UnknownPlaceholder {
        name: name.to_string(),
        known,
        suggestion,
    }
}

impl ServiceDef {
    /// Placeholder names a command, payload or template of this service may use.
    pub fn placeholders(&self) -> Vec<String> {
        let mut k: Vec<String> = ["name", "address", "config_dir", "run_dir"].map(String::from).into();
        if self.vip.is_some() {
            k.push("vip".into());
        }
        if !self.ports.is_empty() {
            k.push("port".into());
        }
        k.extend(self.params.keys().map(|p| format!("param.{p}")));
        k.extend(self.expand.keys().map(|p| format!("expand.{p}")));
        k
    }

    /// The name of the rendered config file: the template's file name without `.tmpl`.
    pub fn config_file_name(&self) -> Option<String> {
        let t = self.config_template.as_deref()?;
        let base = Path::new(t).file_name()?.to_str()?;
        Some(base.strip_suffix(".tmpl").unwrap_or(base).to_string())
    }

    fn instance_error(&self, key: &str, kind: CatalogErrorKind) -> CatalogError {
        CatalogError::new(format!("service {}", self.name), kind).with_key(Some(key.to_string()))
    }

    /// Every placeholder's value for one instance: the parameters (defaults
    /// merged with `overrides`, which may only name declared parameters) and
    /// their expansions, the instance name, address, directories, VIP and port.
    pub fn vars(
        &self,
        instance: &str,
        address: NetAttach,
        dirs: &InstanceDirs,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, CatalogError> {
        if let Some(reason) = domain_name_problem(instance) {
            let kind = CatalogErrorKind::Spec(DomainErrorKind::BadName {
                name: instance.to_string(),
                reason,
            });
            return Err(self.instance_error("instance", kind));
        }
        let mut params = self.params.clone();
        for (k, v) in overrides {
            if !self.params.contains_key(k) {
                let known: Vec<String> = self.params.keys().cloned().collect();
                let suggestion = topology::closest(k, known.iter().map(String::as_str)).map(str::to_string);
                let kind = CatalogErrorKind::UnknownParam {
                    name: k.clone(),
                    known,
                    suggestion,
                };
                return Err(self.instance_error(&format!("params.{k}"), kind));
            }
            if let Some(ch) = param_value_problem(v) {
                let kind = CatalogErrorKind::BadParamValue {
                    name: k.clone(),
                    value: v.clone(),
                    ch,
                };
                return Err(self.instance_error(&format!("params.{k}"), kind));
            }
            params.insert(k.clone(), v.clone());
        }
        let mut vars = BTreeMap::new();
        vars.insert("name".to_string(), instance.to_string());
        vars.insert("address".to_string(), address.address.to_string());
        vars.insert("config_dir".to_string(), dirs.config_dir.clone());
        vars.insert("run_dir".to_string(), dirs.run_dir.clone());
        if let Some(vip) = self.vip {
            vars.insert("vip".to_string(), vip.to_string());
        }
        if let Some(p) = self.ports.first() {
            vars.insert("port".to_string(), p.port.to_string());
        }
        for (name, x) in &self.expand {
            let list = params.get(&x.param).map(String::as_str).unwrap_or_default();
            let mut lines = Vec::new();
            for entry in list.split([' ', ',']).filter(|e| !e.is_empty()) {
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                let item_vars = BTreeMap::from([
                    ("key".to_string(), key.to_string()),
                    ("value".to_string(), value.to_string()),
                ]);
                // Checked at parse time: only {key} and {value}.
                lines.push(render(&x.item, &item_vars).unwrap_or_default());
            }
            vars.insert(format!("expand.{name}"), lines.join("\n"));
        }
        vars.extend(params.into_iter().map(|(k, v)| (format!("param.{k}"), v)));
        Ok(vars)
    }

    /// The spec of instance `instance` of this service: a service domain
    /// attached at `address`, with every placeholder of the command and the
    /// health probe filled in, validated.
    pub fn instantiate(
        &self,
        instance: &str,
        address: NetAttach,
        dirs: &InstanceDirs,
        overrides: &BTreeMap<String, String>,
    ) -> Result<DomainSpec, CatalogError> {
        let vars = self.vars(instance, address, dirs, overrides)?;
        let fill = |key: &str, text: &str| {
            render(text, &vars).map_err(|(_, name)| {
                self.instance_error(key, unknown_placeholder_kind(&name, vars.keys().cloned().collect()))
            })
        };
        let argv = self
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| fill(&format!("command[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let health = match &self.health {
            Some(h) => {
                let kind = match &h.kind {
                    HealthKind::Udp { port, payload } => HealthKind::Udp {
                        port: *port,
                        payload: fill("health.payload", payload)?,
                    },
                    HealthKind::Command { argv } => HealthKind::Command {
                        argv: argv
                            .iter()
                            .map(|a| fill("health.argv", a))
                            .collect::<Result<Vec<_>, _>>()?,
                    },
                    k => k.clone(),
                };
                Some(HealthCheck { kind, ..h.clone() })
            }
            None => None,
        };
        let spec = DomainSpec {
            name: instance.to_string(),
            kind: DomainKind::Service,
            isolation: self.isolation,
            cpu: self.cpu.clone(),
            memory: self.memory,
            net: Some(address),
            argv,
            env: Vec::new(),
            health,
            restart: self.restart,
            service: Some(self.name.clone()),
        };
        spec.validate()
            .map_err(|e| self.instance_error(&e.field, CatalogErrorKind::Spec(e.kind)))?;
        Ok(spec)
    }

    /// Fills the placeholders of a config template with `vars`
    /// ([`ServiceDef::vars`]). An unknown placeholder is an error located by
    /// line and column in the template.
    pub fn render_template(&self, text: &str, vars: &BTreeMap<String, String>) -> Result<String, CatalogError> {
        render(text, vars).map_err(|(at, name)| {
            let file = self
                .config_template
                .clone()
                .unwrap_or_else(|| format!("<template of {}>", self.name));
            let (line, col) = line_col(text, at);
            CatalogError::new(file, unknown_placeholder_kind(&name, vars.keys().cloned().collect())).at(line, col)
        })
    }
}

// ---------------------------------------------------------------------------
// The TOML format.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    description: String,
    isolation: Option<Spanned<String>>,
    command: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    ports: Vec<RawPort>,
    vip: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    cores: Option<Spanned<Vec<Spanned<i64>>>>,
    share: Option<Spanned<i64>>,
    memory: Option<Spanned<toml::Value>>,
    restart: Option<Spanned<String>>,
    health: Option<RawHealth>,
    #[serde(default)]
    params: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    expand: BTreeMap<Spanned<String>, RawExpansion>,
    config_template: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    proto: Spanned<String>,
    port: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    kind: Spanned<String>,
    port: Option<Spanned<i64>>,
    payload: Option<Spanned<String>>,
    argv: Option<Spanned<Vec<Spanned<String>>>>,
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    retries: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpansion {
    param: Spanned<String>,
    item: Spanned<String>,
}

/// Builds located errors for one file.
struct Ctx<'a> {
    src: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, at: usize, kind: CatalogErrorKind) -> CatalogError {
        let (line, col) = line_col(self.src, at);
        CatalogError::new(self.file, kind)
            .with_key(Some(key.to_string()))
            .at(line, col)
    }

    fn choice<T: Copy>(
        &self,
        key: &str,
        v: &Spanned<String>,
        what: &'static str,
        options: &[(&'static str, T)],
    ) -> Result<T, CatalogError> {
        let s = v.get_ref();
        if let Some((_, t)) = options.iter().find(|(n, _)| n == s) {
            return Ok(*t);
        }
        let names = options.iter().map(|(n, _)| *n);
        let lower = s.to_ascii_lowercase();
        let suggestion = names
            .clone()
            .find(|n| *n == lower)
            .or_else(|| topology::closest(&lower, names.clone()))
            .map(str::to_string);
        let kind = CatalogErrorKind::BadChoice {
            what,
            value: s.clone(),
            allowed: names.collect::<Vec<_>>().join(", "),
            suggestion,
        };
        Err(self.err(key, v.span().start, kind))
    }

    fn int<T: TryFrom<i64>>(
        &self,
        key: &str,
        v: &Spanned<i64>,
        what: &'static str,
        lo: i64,
        hi: i64,
    ) -> Result<T, CatalogError> {
        let n = *v.get_ref();
        match T::try_from(n) {
            Ok(t) if (lo..=hi).contains(&n) => Ok(t),
            _ => Err(self.err(
                key,
                v.span().start,
                CatalogErrorKind::OutOfRange {
                    what,
                    value: n,
                    range: format!("{lo}..={hi}"),
                },
            )),
        }
    }

    fn unit<T>(
        &self,
        key: &str,
        v: &Spanned<toml::Value>,
        parse: fn(&str) -> Result<T, UnitError>,
    ) -> Result<T, CatalogError> {
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parse(&text).map_err(|e| self.err(key, v.span().start, CatalogErrorKind::Unit(e)))
    }

    /// Offset of byte `offset` of the string value at `span`, if the source
    /// holds it verbatim (no escapes before it); else the value's start.
    fn in_string(&self, span: &Range<usize>, value: &str, offset: usize) -> usize {
        let body = self.src.get(span.start + 1..).unwrap_or_default();
        if body.starts_with(&value[..offset]) {
            span.start + 1 + offset
        } else {
            span.start
        }
    }

    fn placeholders(&self, key: &str, v: &Spanned<String>, known: &[String]) -> Result<(), CatalogError> {
        match unknown_placeholder(v.get_ref(), known) {
            Some((at, name)) => Err(self.err(
                key,
                self.in_string(&v.span(), v.get_ref(), at),
                unknown_placeholder_kind(name, known.to_vec()),
            )),
            None => Ok(()),
        }
    }

    /// Maps a `toml` error to a located [`CatalogError`].
    fn toml_error(&self, e: &toml::de::Error, syntax: bool) -> CatalogError {
        let message = one_line(e.message());
        let offset = e.span().map(|s| s.start);
        let (key, kind) = if syntax {
            (None, CatalogErrorKind::Syntax { message })
        } else if let Some(rest) = message.strip_prefix("unknown field ") {
            let mut names = backticked(rest);
            let name = if names.is_empty() {
                String::new()
            } else {
                names.remove(0)
            };
            let suggestion = topology::closest(&name, names.iter().map(String::as_str)).map(str::to_string);
            (
                Some(self.key_path(offset, &name)),
                CatalogErrorKind::UnknownKey {
                    key: name,
                    expected: names,
                    suggestion,
                },
            )
        } else if let Some(rest) = message.strip_prefix("missing field ") {
            let name = backticked(rest).into_iter().next().unwrap_or_default();
            (
                Some(self.key_path(offset, &name)),
                CatalogErrorKind::MissingKey { key: name },
            )
        } else {
            let key = offset.and_then(|o| Some(self.key_path(Some(o), &key_on_line(self.src, o)?)));
            (key, CatalogErrorKind::Invalid { message })
        };
        let mut err = CatalogError::new(self.file, kind).with_key(key);
        if let Some(o) = offset {
            let (line, col) = line_col(self.src, o);
            err = err.at(line, col);
        }
        err
    }

    /// `name` prefixed with the table that holds `offset` (e.g. `health.port`, `ports[1].proto`).
    fn key_path(&self, offset: Option<usize>, name: &str) -> String {
        crate::file::key_path(self.src, offset, name)
    }
}

/// Parses and checks one service file. `file` is only used in error messages.
pub fn parse_service(src: &str, file: &str) -> Result<ServiceDef, CatalogError> {
    parse_located(src, file).map(|(def, _)| def)
}

/// [`parse_service`], also returning where the name is.
fn parse_located(src: &str, file: &str) -> Result<(ServiceDef, usize), CatalogError> {
    use CatalogErrorKind as K;
    let cx = Ctx { src, file };
    if let Err(e) = toml::from_str::<toml::Table>(src) {
        return Err(cx.toml_error(&e, true));
    }
    let raw: RawService = toml::from_str(src).map_err(|e| cx.toml_error(&e, false))?;

    let name = raw.name.get_ref().clone();
    if let Some(reason) = domain_name_problem(&name) {
        let kind = K::Spec(DomainErrorKind::BadName { name, reason });
        return Err(cx.err("name", raw.name.span().start, kind));
    }

    let isolation = match &raw.isolation {
        Some(v) => cx.choice(
            "isolation",
            v,
            "isolation",
            &[("container", Isolation::Container), ("vm", Isolation::Vm)],
        )?,
        None => Isolation::Container,
    };

    let command = raw.command.get_ref();
    match command.first() {
        None => {
            return Err(cx.err(
                "command",
                raw.command.span().start,
                K::Spec(DomainErrorKind::EmptyCommand),
            ));
        }
        Some(p) if p.get_ref().is_empty() => {
            return Err(cx.err("command[0]", p.span().start, K::Spec(DomainErrorKind::EmptyCommand)));
        }
        Some(_) => {}
    }
    if let Some(i) = command.iter().position(|a| a.get_ref().contains('\0')) {
        let kind = K::Spec(DomainErrorKind::NulInArgument { index: i });
        return Err(cx.err(&format!("command[{i}]"), command[i].span().start, kind));
    }

    let mut ports: Vec<PortDef> = Vec::new();
    for (i, p) in raw.ports.iter().enumerate() {
        let proto = cx.choice(
            &format!("ports[{i}].proto"),
            &p.proto,
            "protocol",
            &[("tcp", Proto::Tcp), ("udp", Proto::Udp)],
        )?;
        let port: u16 = cx.int(&format!("ports[{i}].port"), &p.port, "port", 1, 65535)?;
        let def = PortDef { proto, port };
        if ports.contains(&def) {
            return Err(cx.err(
                &format!("ports[{i}]"),
                p.port.span().start,
                K::DuplicatePort { proto, port },
            ));
        }
        ports.push(def);
    }

    let vip = match &raw.vip {
        Some(v) => {
            let bad = |reason: &'static str| {
                let kind = K::BadVip {
                    value: v.get_ref().clone(),
                    reason,
                };
                Err(cx.err("vip", v.span().start, kind))
            };
            let Ok(ip) = v.get_ref().parse::<Ipv4Addr>() else {
                return bad("it is not an IPv4 address");
            };
            if !SERVICE_VIP_POOL.contains(ip) {
                return bad("it is outside 10.255.0.0/16, the service VIP range");
            }
            if ip == SERVICE_VIP_POOL.addr || ip == Ipv4Addr::new(10, 255, 255, 255) {
                return bad("it is the network or broadcast address of 10.255.0.0/16");
            }
            Some(ip)
        }
        None => None,
    };

    let mut cpu = None;
    let mut cpu_key: Option<(&str, usize)> = None;
    for (key, at) in [
        ("cpus", raw.cpus.as_ref().map(|v| v.span().start)),
        ("cores", raw.cores.as_ref().map(|v| v.span().start)),
        ("share", raw.share.as_ref().map(|v| v.span().start)),
    ] {
        if let Some(at) = at {
            if let Some((first, _)) = cpu_key {
                return Err(cx.err(
                    key,
                    at,
                    K::CpuConflict {
                        first: first.to_string(),
                    },
                ));
            }
            cpu_key = Some((key, at));
        }
    }
    if let Some(v) = &raw.cpus {
        cpu = Some(CpuSpec::Quota(*v.get_ref()));
    }
    if let Some(v) = &raw.cores {
        let cores = v
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, c)| cx.int::<u32>(&format!("cores[{i}]"), c, "core", 0, i64::from(u32::MAX)))
            .collect::<Result<Vec<_>, _>>()?;
        cpu = Some(CpuSpec::Cores(cores));
    }
    if let Some(v) = &raw.share {
        cpu = Some(CpuSpec::Share(cx.int("share", v, "share", 1, 10_000)?));
    }
    if let (Some(c), Some((key, at))) = (&cpu, cpu_key)
        && let Err(kind) = c.check()
    {
        return Err(cx.err(key, at, K::Spec(kind)));
    }

    let memory = match &raw.memory {
        Some(v) => {
            let bytes = cx.unit("memory", v, units::parse_bytes)?;
            if bytes < MIN_MEMORY {
                return Err(cx.err(
                    "memory",
                    v.span().start,
                    K::Spec(DomainErrorKind::MemoryTooSmall { bytes }),
                ));
            }
            Some(bytes)
        }
        None => None,
    };
    if isolation == Isolation::Vm
        && memory.is_none()
        && let Some(v) = &raw.isolation
    {
        return Err(cx.err("isolation", v.span().start, K::Spec(DomainErrorKind::VmWithoutMemory)));
    }

    let restart = match &raw.restart {
        Some(v) => v
            .get_ref()
            .parse()
            .map_err(|k| cx.err("restart", v.span().start, K::Spec(k)))?,
        None => RestartPolicy::default(),
    };

    let mut params = BTreeMap::new();
    for (k, v) in &raw.params {
        let key = format!("params.{}", k.get_ref());
        if !param_name_ok(k.get_ref()) {
            return Err(cx.err(
                &key,
                k.span().start,
                K::BadParamName {
                    name: k.get_ref().clone(),
                },
            ));
        }
        if let Some(ch) = param_value_problem(v.get_ref()) {
            let kind = K::BadParamValue {
                name: k.get_ref().clone(),
                value: v.get_ref().clone(),
                ch,
            };
            return Err(cx.err(
                &key,
                cx.in_string(&v.span(), v.get_ref(), v.get_ref().find(ch).unwrap_or(0)),
                kind,
            ));
        }
        params.insert(k.get_ref().clone(), v.get_ref().clone());
    }

    let mut expand = BTreeMap::new();
    for (k, x) in &raw.expand {
        let key = format!("expand.{}", k.get_ref());
        if !param_name_ok(k.get_ref()) {
            return Err(cx.err(
                &key,
                k.span().start,
                K::BadParamName {
                    name: k.get_ref().clone(),
                },
            ));
        }
        let param = x.param.get_ref();
        if !params.contains_key(param) {
            let known: Vec<String> = params.keys().cloned().collect();
            let suggestion = topology::closest(param, known.iter().map(String::as_str)).map(str::to_string);
            let kind = K::UnknownParam {
                name: param.clone(),
                known,
                suggestion,
            };
            return Err(cx.err(&format!("{key}.param"), x.param.span().start, kind));
        }
        cx.placeholders(
            &format!("{key}.item"),
            &x.item,
            &["key".to_string(), "value".to_string()],
        )?;
        expand.insert(
            k.get_ref().clone(),
            Expansion {
                param: param.clone(),
                item: x.item.get_ref().clone(),
            },
        );
    }

    let config_template = match &raw.config_template {
        Some(v) => {
            let p = Path::new(v.get_ref());
            let inside = !v.get_ref().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                let kind = K::BadTemplatePath {
                    path: v.get_ref().clone(),
                };
                return Err(cx.err("config_template", v.span().start, kind));
            }
            Some(v.get_ref().clone())
        }
        None => None,
    };

    let mut def = ServiceDef {
        name: raw.name.get_ref().clone(),
        description: raw.description,
        isolation,
        command: command.iter().map(|a| a.get_ref().clone()).collect(),
        ports,
        vip,
        cpu,
        memory,
        health: None,
        restart,
        params,
        expand,
        config_template,
    };
    let known = def.placeholders();
    for (i, a) in command.iter().enumerate() {
        cx.placeholders(&format!("command[{i}]"), a, &known)?;
    }
    if let Some(h) = &raw.health {
        def.health = Some(parse_health(&cx, h, &known)?);
    }
    Ok((def, raw.name.span().start))
}

fn parse_health(cx: &Ctx<'_>, h: &RawHealth, known: &[String]) -> Result<HealthCheck, CatalogError> {
    use CatalogErrorKind as K;
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Process,
        Tcp,
        Udp,
        Command,
    }
    let kind = cx.choice(
        "health.kind",
        &h.kind,
        "health check kind",
        &[
            ("process", Kind::Process),
            ("tcp", Kind::Tcp),
            ("udp", Kind::Udp),
            ("command", Kind::Command),
        ],
    )?;
    let kind_name = h.kind.get_ref().clone();
    let at_kind = h.kind.span().start;
    // Which keys each kind takes.
    let wants = |key: &str| match key {
        "port" => matches!(kind, Kind::Tcp | Kind::Udp),
        "payload" => kind == Kind::Udp,
        _ => kind == Kind::Command,
    };
    for (key, at) in [
        ("port", h.port.as_ref().map(|v| v.span().start)),
        ("payload", h.payload.as_ref().map(|v| v.span().start)),
        ("argv", h.argv.as_ref().map(|v| v.span().start)),
    ] {
        match at {
            Some(at) if !wants(key) => {
                let kind = K::HealthKeyUnused {
                    key,
                    kind: kind_name.clone(),
                };
                return Err(cx.err(&format!("health.{key}"), at, kind));
            }
            None if wants(key) => {
                let kind = K::HealthKeyMissing {
                    key,
                    kind: kind_name.clone(),
                };
                return Err(cx.err(&format!("health.{key}"), at_kind, kind));
            }
            _ => {}
        }
    }
    let port = match &h.port {
        Some(p) => cx.int::<u16>("health.port", p, "port", 1, 65535)?,
        None => 0,
    };
    let kind = match kind {
        Kind::Process => HealthKind::Process,
        Kind::Tcp => HealthKind::Tcp { port },
        Kind::Udp => {
            let p = h.payload.as_ref().expect("checked above");
            cx.placeholders("health.payload", p, known)?;
            HealthKind::Udp {
                port,
                payload: p.get_ref().clone(),
            }
        }
        Kind::Command => {
            let argv = h.argv.as_ref().expect("checked above");
            for a in argv.get_ref() {
                cx.placeholders("health.argv", a, known)?;
            }
            HealthKind::Command {
                argv: argv.get_ref().iter().map(|a| a.get_ref().clone()).collect(),
            }
        }
    };
    let duration = |key: &str, v: &Option<Spanned<toml::Value>>, default: Duration| match v {
        Some(v) => cx.unit(key, v, units::parse_duration),
        None => Ok(default),
    };
    let check = HealthCheck {
        kind,
        interval: duration("health.interval", &h.interval, HealthCheck::DEFAULT_INTERVAL)?,
        timeout: duration("health.timeout", &h.timeout, HealthCheck::DEFAULT_TIMEOUT)?,
        retries: match &h.retries {
            Some(r) => cx.int("health.retries", r, "retries", 0, i64::from(u32::MAX))?,
            None => HealthCheck::DEFAULT_RETRIES,
        },
    };
    check.check().map_err(|(field, kind)| {
        let at = match field {
            "health.port" => h.port.as_ref().map(|v| v.span().start),
            "health.argv" => h.argv.as_ref().map(|v| v.span().start),
            "health.interval" => h.interval.as_ref().map(|v| v.span().start),
            "health.timeout" => h.timeout.as_ref().map(|v| v.span().start),
            "health.retries" => h.retries.as_ref().map(|v| v.span().start),
            _ => None,
        };
        cx.err(field, at.unwrap_or(at_kind), K::Spec(kind))
    })?;
    Ok(check)
}

/// Loads every `*.toml` file of `dir` (in name order) and the config
/// templates they name. A service's name must be its file name without
/// `.toml`; its template's placeholders are checked like its command's.
pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
    let io = |path: &Path, e: std::io::Error| {
        CatalogError::new(
            path.display().to_string(),
            CatalogErrorKind::Io { message: e.to_string() },
        )
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        let kind = CatalogErrorKind::NoServices {
            dir: dir.display().to_string(),
        };
        return Err(CatalogError::new(dir.display().to_string(), kind));
    }
    let mut catalog = Catalog::default();
    for path in files {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let (def, name_at) = parse_located(&src, &file)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if def.name != stem {
            let (line, col) = line_col(&src, name_at);
            let kind = CatalogErrorKind::NameMismatch {
                name: def.name.clone(),
                stem: stem.to_string(),
            };
            return Err(CatalogError::new(file, kind)
                .with_key(Some("name".into()))
                .at(line, col));
        }
        if let Some(rel) = &def.config_template {
            let tpath = dir.join(rel);
            let text = std::fs::read_to_string(&tpath).map_err(|e| io(&tpath, e))?;
            let known = def.placeholders();
            if let Some((at, name)) = unknown_placeholder(&text, &known) {
                let (line, col) = line_col(&text, at);
                return Err(
                    CatalogError::new(tpath.display().to_string(), unknown_placeholder_kind(name, known)).at(line, col),
                );
            }
            catalog.templates.insert(def.name.clone(), text);
        }
        catalog.services.insert(def.name.clone(), def);
    }
    Ok(catalog)
}

// ---------------------------------------------------------------------------
// Errors.

fn braced(names: &[String]) -> String {
    names.iter().map(|n| format!("{{{n}}}")).collect::<Vec<_>>().join(", ")
}

fn did_you_mean(s: &Option<String>, wrap: fn(&str) -> String) -> String {
    s.as_ref()
        .map(|s| format!("did you mean {}? otherwise ", wrap(s)))
        .unwrap_or_default()
}

/// What is wrong with a catalog file or an instantiation.
/// `Display` is `WHAT IS WRONG; fix: HOW TO FIX`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogErrorKind {
    /// Not valid TOML.
    #[error("{message}; fix: correct the TOML syntax at this position")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key the format does not know.
    #[error(
        "unknown key \"{key}\"; fix: {}remove it (allowed here: {})",
        did_you_mean(suggestion, |s| format!("\"{s}\"")),
        if expected.is_empty() { "nothing".to_string() } else { expected.join(", ") }
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys allowed in that table.
        expected: Vec<String>,
        /// The closest allowed key.
        suggestion: Option<String>,
    },
    /// A required key is absent.
    #[error("missing required key \"{key}\"; fix: add `{key} = ...` to this table")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A value of the wrong type.
    #[error("{message}; fix: change the value to the expected type (see docs/domains.md)")]
    Invalid {
        /// The deserializer's message.
        message: String,
    },
    /// A file or directory that cannot be read.
    #[error("cannot read it: {message}; fix: check the path and its permissions")]
    Io {
        /// The OS error.
        message: String,
    },
    /// A size or duration that does not parse.
    #[error("bad {} \"{}\"; fix: {}", .0.what(), .0.value(), .0.hint())]
    Unit(UnitError),
    /// A value that breaks a domain rule (name, cpu, memory, health, restart, ...).
    #[error("{0}")]
    Spec(DomainErrorKind),
    /// Not one of a fixed set of words.
    #[error(
        "bad {what} \"{value}\"; fix: {}use {allowed}",
        suggestion.as_ref().map(|s| format!("did you mean \"{s}\"? ")).unwrap_or_default()
    )]
    BadChoice {
        /// What the value is.
        what: &'static str,
        /// The value given.
        value: String,
        /// The allowed values.
        allowed: String,
        /// The closest allowed value.
        suggestion: Option<String>,
    },
    /// An integer out of range.
    #[error("{what} {value} is outside {range}; fix: use a value in {range}")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value given.
        value: i64,
        /// The allowed range.
        range: String,
    },
    /// More than one of `cpus`, `cores`, `share`.
    #[error("{first} is already set; fix: set only one of cpus, cores and share")]
    CpuConflict {
        /// The key set first.
        first: String,
    },
    /// A bad service VIP.
    #[error("bad vip \"{value}\": {reason}; fix: use an address in 10.255.0.0/16, e.g. \"10.255.0.10\"")]
    BadVip {
        /// The value given.
        value: String,
        /// Why it is bad.
        reason: &'static str,
    },
    /// The same port twice.
    #[error("port {proto} {port} is listed twice; fix: list each port once")]
    DuplicatePort {
        /// Protocol.
        proto: Proto,
        /// Port.
        port: u16,
    },
    /// A health key the kind does not use.
    #[error("key \"{key}\" does not apply to a {kind} health check; fix: remove it")]
    HealthKeyUnused {
        /// The key.
        key: &'static str,
        /// The health check kind.
        kind: String,
    },
    /// A health key the kind needs.
    #[error("a {kind} health check needs \"{key}\"; fix: add `{key} = ...` to [health]")]
    HealthKeyMissing {
        /// The key.
        key: &'static str,
        /// The health check kind.
        kind: String,
    },
    /// A parameter or expansion name that is not `[a-z][a-z0-9_]*`.
    #[error("bad parameter name \"{name}\"; fix: use a-z, 0-9 and '_', starting with a letter")]
    BadParamName {
        /// The name.
        name: String,
    },
    /// A parameter value with a character that could break a command or config.
    #[error(
        "the value \"{value}\" of parameter {name} contains {ch:?}; fix: use letters, digits, spaces and . _ : @ + / = , -"
    )]
    BadParamValue {
        /// The parameter.
        name: String,
        /// Its value.
        value: String,
        /// The first character not allowed.
        ch: char,
    },
    /// A parameter that is not declared.
    #[error(
        "unknown parameter \"{name}\"; fix: {}use a parameter declared in [params] ({})",
        did_you_mean(suggestion, |s| format!("\"{s}\"")),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    UnknownParam {
        /// The name.
        name: String,
        /// The declared parameters.
        known: Vec<String>,
        /// The closest one.
        suggestion: Option<String>,
    },
    /// A placeholder that is not defined.
    #[error(
        "unknown placeholder {{{name}}}; fix: {}use one of {}, or write {{{{ for a literal brace",
        did_you_mean(suggestion, |s| format!("{{{s}}}")),
        braced(known)
    )]
    UnknownPlaceholder {
        /// The placeholder's name.
        name: String,
        /// The names that are defined there.
        known: Vec<String>,
        /// The closest one.
        suggestion: Option<String>,
    },
    /// `config_template` outside the catalog directory.
    #[error(
        "config_template \"{path}\" is not a relative path inside the catalog; fix: use e.g. \"pabx/kamailio.cfg.tmpl\""
    )]
    BadTemplatePath {
        /// The value given.
        path: String,
    },
    /// A service named differently from its file.
    #[error("service \"{name}\" is in {stem}.toml; fix: name the file {name}.toml or the service \"{stem}\"")]
    NameMismatch {
        /// The service name.
        name: String,
        /// The file name without `.toml`.
        stem: String,
    },
    /// An empty catalog directory.
    #[error("no *.toml service files in {dir}; fix: point at the catalog directory")]
    NoServices {
        /// The directory.
        dir: String,
    },
    /// A service that is not in the catalog.
    #[error(
        "unknown service \"{name}\"; fix: {}use one of {}",
        did_you_mean(suggestion, |s| format!("\"{s}\"")),
        known.join(", ")
    )]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The services in the catalog.
        known: Vec<String>,
        /// The closest one.
        suggestion: Option<String>,
    },
}

/// A [`CatalogErrorKind`] with where it happened.
///
/// `Display` is one line: `FILE:LINE:COL: KEY: WHAT IS WRONG; fix: HOW TO FIX`
/// (1-based line and column); without a location `FILE: KEY: ...`; without a
/// key the `KEY: ` part is left out. For an instantiation the "file" is
/// `service NAME`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct CatalogError {
    /// The file (or `service NAME`, `catalog`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column in characters, when known.
    pub column: Option<usize>,
    /// The offending key, e.g. `health.timeout`, `ports[1].port`, `command[3]`.
    pub key: Option<String>,
    /// What is wrong.
    pub kind: Box<CatalogErrorKind>,
}

impl CatalogError {
    /// An error in `file` without location or key.
    pub fn new(file: impl Into<String>, kind: CatalogErrorKind) -> Self {
        CatalogError {
            file: file.into(),
            line: None,
            column: None,
            key: None,
            kind: Box::new(kind),
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: Option<String>) -> Self {
        self.key = key;
        self
    }

    /// Sets the 1-based line and column.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        let kind = self.kind.to_string();
        f.write_str(&kind.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"name = "pabx"
description = "SIP PABX"
isolation = "container"
command = ["kamailio", "-f", "{config_dir}/kamailio.cfg", "-m", "{param.shm_mb}"]
ports = [{ proto = "udp", port = 5060 }, { proto = "tcp", port = 5060 }]
vip = "10.255.0.10"
cpus = 0.5
memory = "128MiB"
restart = "on-failure:5"
config_template = "pabx/kamailio.cfg.tmpl"

[health]
kind = "udp"
port = 5060
payload = "OPTIONS sip:{address}:{port} SIP/2.0\r\n"
interval = "5s"
timeout = "1s"
retries = 2

[params]
static_users = "2000=10.0.4.2:5060 2001=10.0.5.2"
shm_mb = "64"

[expand.static_routes]
param = "static_users"
item = 'if ($rU == "{key}") { $ru = "sip:{key}@{value}"; }'
"#;

    /// A minimal valid file on lines 1-3; `extra` starts on line 4.
    fn base(extra: &str) -> String {
        format!("name = \"svc\"\ndescription = \"x\"\ncommand = [\"run\"]\n{extra}")
    }

    /// Parses `src` expecting an error at `line:col` with `key`; returns the message.
    #[track_caller]
    fn err_at(src: &str, line: usize, col: usize, key: &str) -> String {
        let e = parse_service(src, "s.toml").expect_err("should fail");
        let msg = e.to_string();
        assert_eq!(
            (e.line, e.column, e.key.as_deref()),
            (Some(line), Some(col), Some(key)),
            "{msg}"
        );
        assert!(msg.starts_with(&format!("s.toml:{line}:{col}: {key}: ")), "{msg}");
        assert!(msg.contains("; fix: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        msg
    }

    fn net() -> NetAttach {
        NetAttach {
            address: Ipv4Addr::new(10, 0, 4, 2),
            prefix_len: 30,
            gateway: Some(Ipv4Addr::new(10, 0, 4, 1)),
        }
    }

    fn dirs(name: &str) -> InstanceDirs {
        InstanceDirs {
            config_dir: format!("/run/wuos/d/{name}/config"),
            run_dir: format!("/run/wuos/d/{name}"),
        }
    }

    #[test]
    fn full_file() {
        let d = parse_service(FULL, "pabx.toml").unwrap();
        assert_eq!(d.name, "pabx");
        assert_eq!(d.isolation, Isolation::Container);
        assert_eq!(
            d.ports,
            [
                PortDef {
                    proto: Proto::Udp,
                    port: 5060
                },
                PortDef {
                    proto: Proto::Tcp,
                    port: 5060
                }
            ]
        );
        assert_eq!(d.vip, Some(Ipv4Addr::new(10, 255, 0, 10)));
        assert_eq!(d.cpu, Some(CpuSpec::Quota(0.5)));
        assert_eq!(d.memory, Some(128 << 20));
        assert_eq!(d.restart, RestartPolicy::OnFailure { max_retries: 5 });
        let h = d.health.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.timeout, h.retries),
            (Duration::from_secs(5), Duration::from_secs(1), 2)
        );
        assert_eq!(d.config_file_name().as_deref(), Some("kamailio.cfg"));
        assert_eq!(d.expand["static_routes"].param, "static_users");

        let spec = d
            .instantiate("pabx-1", net(), &dirs("pabx-1"), &BTreeMap::new())
            .unwrap();
        assert_eq!(
            spec.argv,
            ["kamailio", "-f", "/run/wuos/d/pabx-1/config/kamailio.cfg", "-m", "64"]
        );
        assert_eq!(
            (spec.kind, spec.service.as_deref()),
            (DomainKind::Service, Some("pabx"))
        );
        assert_eq!(spec.net, Some(net()));
        let Some(HealthKind::Udp { payload, .. }) = spec.health.map(|h| h.kind) else {
            panic!("expected a udp health check")
        };
        assert_eq!(payload, "OPTIONS sip:10.0.4.2:5060 SIP/2.0\r\n");

        // Expansions and overrides.
        let over = BTreeMap::from([("static_users".to_string(), "3000=10.0.9.2, 3001".to_string())]);
        let vars = d.vars("pabx-2", net(), &dirs("pabx-2"), &over).unwrap();
        assert_eq!(
            vars["expand.static_routes"],
            "if ($rU == \"3000\") { $ru = \"sip:3000@10.0.9.2\"; }\nif ($rU == \"3001\") { $ru = \"sip:3001@\"; }"
        );
        assert_eq!(vars["vip"], "10.255.0.10");
        assert_eq!(vars["port"], "5060");
        assert_eq!(vars["name"], "pabx-2");
        assert_eq!(vars["param.shm_mb"], "64");
        let over = BTreeMap::from([("static_users".to_string(), String::new())]);
        assert_eq!(
            d.vars("p", net(), &dirs("p"), &over).unwrap()["expand.static_routes"],
            ""
        );
    }

    #[test]
    fn defaults() {
        let d = parse_service(&base(""), "s.toml").unwrap();
        assert_eq!(d.isolation, Isolation::Container);
        assert_eq!(d.restart, RestartPolicy::OnFailure { max_retries: 3 });
        assert!(d.ports.is_empty() && d.vip.is_none() && d.cpu.is_none() && d.health.is_none());
        let d = parse_service(&base("[health]\nkind = \"tcp\"\nport = 80\n"), "s.toml").unwrap();
        let h = d.health.unwrap();
        assert_eq!(
            (h.kind, h.interval, h.timeout, h.retries),
            (
                HealthKind::Tcp { port: 80 },
                Duration::from_secs(10),
                Duration::from_secs(2),
                3
            )
        );
        let d = parse_service(&base("cores = [1, 2]\n"), "s.toml").unwrap();
        assert_eq!(d.cpu, Some(CpuSpec::Cores(vec![1, 2])));
        let d = parse_service(&base("share = 200\nisolation = \"vm\"\nmemory = 268435456\n"), "s.toml").unwrap();
        assert_eq!(
            (d.cpu, d.isolation, d.memory),
            (Some(CpuSpec::Share(200)), Isolation::Vm, Some(256 << 20))
        );
        // Array-of-tables ports work too.
        let d = parse_service(&base("[[ports]]\nproto = \"tcp\"\nport = 80\n"), "s.toml").unwrap();
        assert_eq!(
            d.ports,
            [PortDef {
                proto: Proto::Tcp,
                port: 80
            }]
        );
    }

    #[test]
    fn toml_errors() {
        let e = parse_service("name = \"x\ndescription = \"y\"\n", "s.toml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(10)), "{e}");
        assert!(matches!(*e.kind, CatalogErrorKind::Syntax { .. }), "{e}");
        let msg = err_at(&base("comand = [\"x\"]\n"), 4, 1, "comand");
        assert!(
            msg.contains("unknown key \"comand\"; fix: did you mean \"command\"?"),
            "{msg}"
        );
        let msg = err_at(&base("[health]\nkind = \"tcp\"\nprot = 80\n"), 6, 1, "health.prot");
        assert!(msg.contains("did you mean \"port\"?"), "{msg}");
        err_at(
            &base("[[ports]]\nproto = \"tcp\"\nport = 1\n[[ports]]\nproto = \"udp\"\nport = 1\nx = 1\n"),
            10,
            1,
            "ports[1].x",
        );
        let msg = err_at("name = \"svc\"\ncommand = [\"run\"]\n", 1, 1, "description");
        assert!(msg.contains("missing required key \"description\""), "{msg}");
        err_at(&base("[health]\nport = 80\n"), 4, 1, "health.kind");
        let msg = err_at(&base("cpus = \"half\"\n"), 4, 8, "cpus");
        assert!(msg.contains("expected a number"), "{msg}");
        err_at(&base("[params]\ncpus = 1\n"), 5, 8, "params.cpus");
    }

    #[test]
    fn field_errors() {
        let msg = err_at(
            "name = \"Svc\"\ndescription = \"x\"\ncommand = [\"run\"]\n",
            1,
            8,
            "name",
        );
        assert!(
            msg.contains("bad name \"Svc\": it must start with a lowercase letter"),
            "{msg}"
        );
        let msg = err_at(&base("isolation = \"VM\"\n"), 4, 13, "isolation");
        assert!(
            msg.contains("bad isolation \"VM\"; fix: did you mean \"vm\"? use container, vm"),
            "{msg}"
        );
        let msg = err_at(&base("isolation = \"vm\"\n"), 4, 13, "isolation");
        assert!(msg.contains("a vm domain needs a fixed memory size"), "{msg}");
        let src = "name = \"svc\"\ndescription = \"x\"\ncommand = []\n";
        assert!(err_at(src, 3, 11, "command").contains("the command is empty"));
        err_at(
            "name = \"svc\"\ndescription = \"x\"\ncommand = [\"\"]\n",
            3,
            12,
            "command[0]",
        );
        err_at(
            "name = \"svc\"\ndescription = \"x\"\ncommand = [\"a\", \"\\u0000\"]\n",
            3,
            17,
            "command[1]",
        );
        let msg = err_at(
            &base("ports = [{ proto = \"sctp\", port = 1 }]\n"),
            4,
            20,
            "ports[0].proto",
        );
        assert!(
            msg.contains("bad protocol \"sctp\"; fix: did you mean \"tcp\"? use tcp, udp"),
            "{msg}"
        );
        let msg = err_at(
            &base("ports = [{ proto = \"udp\", port = 70000 }]\n"),
            4,
            34,
            "ports[0].port",
        );
        assert!(msg.contains("port 70000 is outside 1..=65535"), "{msg}");
        err_at(
            &base("ports = [{ proto = \"udp\", port = 0 }]\n"),
            4,
            34,
            "ports[0].port",
        );
        let msg = err_at(
            &base("ports = [{ proto = \"udp\", port = 7 }, { proto = \"udp\", port = 7 }]\n"),
            4,
            63,
            "ports[1]",
        );
        assert!(msg.contains("port udp 7 is listed twice"), "{msg}");
        for (vip, why) in [
            ("10.255.0", "not an IPv4 address"),
            ("10.0.0.1", "outside 10.255.0.0/16"),
            ("10.255.0.0", "network or broadcast"),
            ("10.255.255.255", "network or broadcast"),
        ] {
            let msg = err_at(&base(&format!("vip = \"{vip}\"\n")), 4, 7, "vip");
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn resource_errors() {
        let msg = err_at(&base("cpus = 1\nshare = 10\n"), 5, 9, "share");
        assert!(
            msg.contains("cpus is already set; fix: set only one of cpus, cores and share"),
            "{msg}"
        );
        let msg = err_at(&base("cpus = 0.001\n"), 4, 8, "cpus");
        assert!(msg.contains("bad cpus 0.001"), "{msg}");
        assert!(err_at(&base("cores = []\n"), 4, 9, "cores").contains("the cpuset is empty"));
        assert!(err_at(&base("cores = [1, 1]\n"), 4, 9, "cores").contains("core 1 is listed twice"));
        assert!(err_at(&base("cores = [1, -1]\n"), 4, 13, "cores[1]").contains("core -1 is outside 0..="));
        assert!(err_at(&base("share = 0\n"), 4, 9, "share").contains("share 0 is outside 1..=10000"));
        let msg = err_at(&base("memory = \"128MB\"\n"), 4, 10, "memory");
        assert!(
            msg.contains("bad size \"128MB\"; fix: use a number with KiB, MiB"),
            "{msg}"
        );
        let msg = err_at(&base("memory = \"1MiB\"\n"), 4, 10, "memory");
        assert!(msg.contains("memory 1MiB is below the 16MiB minimum"), "{msg}");
        let msg = err_at(&base("restart = \"sometimes\"\n"), 4, 11, "restart");
        assert!(msg.contains("bad restart policy \"sometimes\""), "{msg}");
    }

    #[test]
    fn health_errors() {
        let h = |body: &str| base(&format!("[health]\n{body}"));
        let msg = err_at(&h("kind = \"http\"\n"), 5, 8, "health.kind");
        assert!(
            msg.ends_with("bad health check kind \"http\"; fix: did you mean \"tcp\"? use process, tcp, udp, command"),
            "{msg}"
        );
        let msg = err_at(&h("kind = \"process\"\nport = 1\n"), 6, 8, "health.port");
        assert!(
            msg.contains("key \"port\" does not apply to a process health check"),
            "{msg}"
        );
        err_at(
            &h("kind = \"tcp\"\nport = 1\npayload = \"x\"\n"),
            7,
            11,
            "health.payload",
        );
        let msg = err_at(&h("kind = \"udp\"\nport = 1\n"), 5, 8, "health.payload");
        assert!(msg.contains("a udp health check needs \"payload\""), "{msg}");
        err_at(&h("kind = \"tcp\"\n"), 5, 8, "health.port");
        err_at(&h("kind = \"command\"\n"), 5, 8, "health.argv");
        err_at(&h("kind = \"tcp\"\nport = 0\n"), 6, 8, "health.port");
        assert!(err_at(&h("kind = \"command\"\nargv = []\n"), 6, 8, "health.argv").contains("health command is empty"));
        err_at(
            &h("kind = \"process\"\ninterval = \"5 minutes\"\n"),
            6,
            12,
            "health.interval",
        );
        err_at(&h("kind = \"process\"\ninterval = \"0\"\n"), 6, 12, "health.interval");
        let msg = err_at(&h("kind = \"process\"\ntimeout = \"20s\"\n"), 6, 11, "health.timeout");
        assert!(
            msg.contains("health timeout 20s must be above 0 and at most the interval 10s"),
            "{msg}"
        );
        err_at(&h("kind = \"process\"\nretries = 0\n"), 6, 11, "health.retries");
        err_at(&h("kind = \"process\"\nretries = -1\n"), 6, 11, "health.retries");
    }

    #[test]
    fn params_and_placeholders() {
        let msg = err_at(&base("[params]\nBad = \"1\"\n"), 5, 1, "params.Bad");
        assert!(msg.contains("bad parameter name \"Bad\""), "{msg}");
        let msg = err_at(&base("[params]\nx = \"a;b\"\n"), 5, 7, "params.x");
        assert!(msg.contains("contains ';'"), "{msg}");
        let msg = err_at(
            &base("[params]\nx = \"\"\n[expand.y]\nparam = \"z\"\nitem = \"\"\n"),
            7,
            9,
            "expand.y.param",
        );
        assert!(
            msg.ends_with(
                "unknown parameter \"z\"; fix: did you mean \"x\"? otherwise use a parameter declared in [params] (x)"
            ),
            "{msg}"
        );
        let msg = err_at(
            &base("[params]\nx = \"\"\n[expand.y]\nparam = \"x\"\nitem = \"{key} {val}\"\n"),
            8,
            15,
            "expand.y.item",
        );
        assert!(
            msg.contains("unknown placeholder {val}; fix: did you mean {value}?"),
            "{msg}"
        );
        // In the command, the column is the placeholder's own.
        let src = "name = \"svc\"\ndescription = \"x\"\ncommand = [\"run\", \"--n={param.count}\"]\n[params]\ncuont = \"1\"\n";
        let msg = err_at(src, 3, 24, "command[1]");
        assert!(
            msg.ends_with(
                "unknown placeholder {param.count}; fix: did you mean {param.cuont}? otherwise use one of {name}, \
                 {address}, {config_dir}, {run_dir}, {param.cuont}, or write {{ for a literal brace"
            ),
            "{msg}"
        );
        // {vip} and {port} exist only when the service has them.
        let src = "name = \"svc\"\ndescription = \"x\"\ncommand = [\"run\", \"{vip}\"]\n";
        err_at(src, 3, 20, "command[1]");
        let src = "name = \"svc\"\ndescription = \"x\"\ncommand = [\"run\", \"{port}\"]\n";
        err_at(src, 3, 20, "command[1]");
        let msg = err_at(
            &base("[health]\nkind = \"udp\"\nport = 1\npayload = \"hi {nmae}\"\n"),
            7,
            15,
            "health.payload",
        );
        assert!(msg.contains("did you mean {name}?"), "{msg}");
        err_at(
            &base("[health]\nkind = \"command\"\nargv = [\"{x}\"]\n"),
            6,
            10,
            "health.argv",
        );
        // Literal braces.
        let d = parse_service(&base("[params]\nx = \"1\"\n[health]\nkind = \"command\"\nargv = [\"sh\", \"-c\", \"f() { :; }; {{param.x} {param.x}\"]\n"), "s.toml").unwrap();
        let spec = d.instantiate("svc-1", net(), &dirs("svc-1"), &BTreeMap::new()).unwrap();
        let Some(HealthKind::Command { argv }) = spec.health.map(|h| h.kind) else {
            panic!("expected a command health check")
        };
        assert_eq!(argv[2], "f() { :; }; {param.x} 1");
        for path in ["/etc/x", "../x", "a/../../x", ""] {
            let msg = err_at(
                &base(&format!("config_template = \"{path}\"\n")),
                4,
                19,
                "config_template",
            );
            assert!(msg.contains("is not a relative path inside the catalog"), "{msg}");
        }
    }

    #[test]
    fn instantiation_errors() {
        let d = parse_service(FULL, "pabx.toml").unwrap();
        let inst = |name: &str, over: &[(&str, &str)]| {
            let over = over.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            d.instantiate(name, net(), &dirs(name), &over).unwrap_err().to_string()
        };
        assert_eq!(
            inst("pabx-1", &[("static_user", "1")]),
            "service pabx: params.static_user: unknown parameter \"static_user\"; fix: did you mean \"static_users\"? \
             otherwise use a parameter declared in [params] (shm_mb, static_users)"
        );
        assert_eq!(
            inst("pabx-1", &[("static_users", "2000=\"x\"")]),
            "service pabx: params.static_users: the value \"2000=\"x\"\" of parameter static_users contains '\"'; fix: \
             use letters, digits, spaces and . _ : @ + / = , -"
        );
        assert!(inst("PABX", &[]).starts_with("service pabx: instance: bad name \"PABX\""));
        // The final spec is validated too.
        let bad_net = NetAttach {
            address: Ipv4Addr::new(10, 255, 0, 10),
            ..net()
        };
        let e = d
            .instantiate("pabx-1", bad_net, &dirs("p"), &BTreeMap::new())
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("net.address"), "{e}");
    }

    #[test]
    fn template_rendering() {
        let d = parse_service(FULL, "pabx.toml").unwrap();
        let vars = d.vars("pabx-1", net(), &dirs("pabx-1"), &BTreeMap::new()).unwrap();
        let text = "route {\n\tlisten={address}:{port} {{vip}\n}\n";
        assert_eq!(
            d.render_template(text, &vars).unwrap(),
            "route {\n\tlisten=10.0.4.2:5060 {vip}\n}\n"
        );
        let e = d.render_template("a\n  x={param.shm_m}\n", &vars).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.line, e.column),
            ("pabx/kamailio.cfg.tmpl", Some(2), Some(5))
        );
        assert!(
            e.to_string().starts_with(
                "pabx/kamailio.cfg.tmpl:2:5: unknown placeholder {param.shm_m}; fix: did you mean {param.shm_mb}?"
            ),
            "{e}"
        );
        // Not placeholders: uppercase, spaces, unterminated, Kamailio's own syntax.
        for literal in ["{X}", "{ x }", "{x", "$(ru{uri.user", "{}", "{1}"] {
            assert_eq!(d.render_template(literal, &vars).unwrap(), literal);
        }
    }

    #[test]
    fn docs_example_parses() {
        let doc = include_str!("../../../docs/domains.md");
        let start = doc.find("```toml\n").expect("docs/domains.md has a toml example") + 8;
        let len = doc[start..].find("```").unwrap();
        let d = parse_service(&doc[start..start + len], "docs/domains.md").unwrap();
        assert_eq!(d.name, "echo");
        d.instantiate("echo-1", net(), &dirs("echo-1"), &BTreeMap::new())
            .unwrap();
        // The documented escape for Kamailio transformations.
        assert_eq!(
            d.render_template("$(ru{{uri.user})", &BTreeMap::new()).unwrap(),
            "$(ru{uri.user})"
        );
    }

    fn catalog_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog")
    }

    /// The catalog shipped in `catalog/` loads, and every entry instantiates
    /// and renders without a placeholder left.
    #[test]
    fn shipped_catalog() {
        let c = load_dir(&catalog_dir()).unwrap();
        assert_eq!(
            c.services.keys().collect::<Vec<_>>(),
            ["echo", "echo-vm", "pabx", "stress"]
        );
        for (name, def) in &c.services {
            let inst = format!("{name}-1");
            let spec = def.instantiate(&inst, net(), &dirs(&inst), &BTreeMap::new()).unwrap();
            spec.validate().unwrap();
            assert_eq!(spec.service.as_deref(), Some(name.as_str()));
            assert!(spec.memory.is_some(), "{name}: admission needs a memory limit");
            for a in &spec.argv {
                assert!(!a.contains('{'), "{name}: {a}");
            }
        }

        let pabx = c.get("pabx").unwrap();
        let over = BTreeMap::from([(
            "static_users".to_string(),
            "2000=10.0.4.2:5060 2001=10.0.5.2".to_string(),
        )]);
        let spec = pabx.instantiate("pabx-1", net(), &dirs("pabx-1"), &over).unwrap();
        assert_eq!(
            spec.argv,
            [
                "kamailio",
                "-DD",
                "-E",
                "-f",
                "/run/wuos/d/pabx-1/config/kamailio.cfg",
                "-P",
                "/run/wuos/d/pabx-1/kamailio.pid",
                "-m",
                "64",
                "-M",
                "8"
            ]
        );
        let Some(HealthKind::Udp { port: 5060, payload }) = spec.health.as_ref().map(|h| h.kind.clone()) else {
            panic!("pabx: expected a udp health check on 5060")
        };
        assert!(
            payload.starts_with("OPTIONS sip:10.0.4.2:5060 SIP/2.0\r\nVia: "),
            "{payload}"
        );
        assert!(payload.ends_with("\r\nContent-Length: 0\r\n\r\n"), "{payload}");
        let vars = pabx.vars("pabx-1", net(), &dirs("pabx-1"), &over).unwrap();
        let (file, cfg) = c.render_config("pabx", &vars).unwrap().unwrap();
        assert_eq!(file, "kamailio.cfg");
        assert!(
            cfg.contains("listen=udp:10.0.4.2:5060\nlisten=udp:10.255.0.10:5060\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains(
                "if ($rU == \"2000\") { $ru = \"sip:2000@10.0.4.2:5060\"; route(RELAY); }\n\
                 if ($rU == \"2001\") { $ru = \"sip:2001@10.0.5.2\"; route(RELAY); }\n"
            ),
            "{cfg}"
        );
        assert!(
            cfg.contains("lookup(\"location\")") && cfg.contains("record_route()"),
            "{cfg}"
        );
        // Kamailio blocks must be balanced after rendering.
        assert_eq!(cfg.matches('{').count(), cfg.matches('}').count());
        for m in ["sl", "rr", "maxfwd", "textops", "siputils", "registrar", "usrloc"] {
            assert!(cfg.contains(&format!("loadmodule \"{m}.so\"")), "{m}");
        }
        // A stateless proxy: the VIP is anycast, a reply may reach another instance.
        assert!(cfg.contains("forward()") && !cfg.contains("t_relay") && !cfg.contains("\"tm.so\""));

        let stress = c.get("stress").unwrap();
        let over = BTreeMap::from([("memory".to_string(), "200MiB".to_string())]);
        let spec = stress.instantiate("stress-1", net(), &dirs("s"), &over).unwrap();
        assert_eq!(
            spec.argv,
            ["wuos", "hog", "--memory", "200MiB", "--cpus", "1", "--duration", "60s"]
        );
        assert_eq!(c.render_config("stress", &BTreeMap::new()).unwrap(), None);
        let echo = c.get("echo").unwrap();
        let spec = echo.instantiate("echo-1", net(), &dirs("e"), &BTreeMap::new()).unwrap();
        assert_eq!(spec.argv, ["wuos", "echo", "--port", "7"]);
        assert_eq!(spec.restart, RestartPolicy::Always);
        let vm = c.get("echo-vm").unwrap();
        assert_eq!(vm.isolation, Isolation::Vm);
        assert_eq!(
            vm.instantiate("v-1", net(), &dirs("v"), &BTreeMap::new()).unwrap().argv,
            spec.argv
        );

        let e = c.get("pbax").unwrap_err();
        assert_eq!(
            e.to_string(),
            "catalog: unknown service \"pbax\"; fix: did you mean \"pabx\"? otherwise use one of echo, echo-vm, pabx, stress"
        );
    }

    #[test]
    fn load_dir_errors() {
        let dir = std::env::temp_dir().join(format!("wuos-catalog-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t")).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(matches!(*e.kind, CatalogErrorKind::NoServices { .. }), "{e}");

        std::fs::write(dir.join("other.toml"), base("")).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("other.toml:1:8: name: service \"svc\" is in other.toml; fix: name the file svc.toml or the service \"other\""),
            "{e}"
        );
        std::fs::remove_file(dir.join("other.toml")).unwrap();

        std::fs::write(dir.join("svc.toml"), base("config_template = \"t/svc.conf.tmpl\"\n")).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(matches!(*e.kind, CatalogErrorKind::Io { .. }), "{e}");
        assert!(e.file.ends_with("svc.conf.tmpl"), "{e}");

        std::fs::write(dir.join("t/svc.conf.tmpl"), "ok {name}\nport {port}\n").unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(6)), "{e}");
        assert!(e.to_string().contains("unknown placeholder {port}"), "{e}");

        std::fs::write(dir.join("t/svc.conf.tmpl"), "ok {name}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let c = load_dir(&dir).unwrap();
        assert_eq!(c.templates["svc"], "ok {name}\n");
        let vars = c.services["svc"]
            .vars("svc-1", net(), &dirs("x"), &BTreeMap::new())
            .unwrap();
        assert_eq!(
            c.render_config("svc", &vars).unwrap(),
            Some(("svc.conf".to_string(), "ok svc-1\n".to_string()))
        );

        std::fs::write(dir.join("svc.toml"), base("memory = \"x\"\n")).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("svc.toml:4:10: memory: bad size"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(e.to_string().contains("cannot read it: "), "{e}");
    }
}
