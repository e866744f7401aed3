//! The parser: a policy file's text → [`Policy`], or the first error with its line and column.
//!
//! Recursive descent over the tokens of the (private) `lex` module. The grammar (EBNF) and every
//! error message are in `docs/policy.md`; newlines are plain whitespace, so an item ends where
//! the next item's keyword (or the service's `}`) begins.

use std::net::Ipv4Addr;

use wuos_model::catalog::Proto;

use crate::error::PolicyError;
use crate::lex::{Tok, Token, lex};
use crate::policy::{
    Cond, DEFAULT_HOLD_MS, Fallback, MAX_DEPTH, MAX_HOLD_MS, MAX_HOPS, MAX_NAME_LEN, Match, Metric, Policy, Pos,
    Prefer, Rule, Service, Target,
};

/// Parses a policy file's text. Same as [`Policy::parse`].
pub fn parse(src: &str) -> Result<Policy, PolicyError> {
    let mut p = Parser {
        src,
        toks: lex(src),
        i: 0,
        seen: Vec::new(),
    };
    let mut services: Vec<Service> = Vec::new();
    loop {
        let t = p.peek();
        match t.tok {
            Tok::Word("service") => {
                let s = p.service(&services)?;
                services.push(s);
            }
            Tok::Eof if !services.is_empty() => break,
            _ => return Err(expected(t, "`service`")),
        }
    }
    Ok(Policy { services })
}

/// The keywords that start an item of a service block.
const ITEM_KEYWORDS: [&str; 4] = ["match", "place", "otherwise", "hold"];
/// How messages name what may start an item.
const ITEMS: &str = "`match`, `place`, `otherwise`, `hold` or `}`";
/// How messages name the end of an item.
const NEXT_ITEM: &str = "the next item (`match`, `place`, `otherwise`, `hold` or `}`)";
const OPERATORS: &str = "a comparison operator (<, <=, >, >=, ==, !=)";
const PREFERENCES: &str = "a preference (lowest latency, lowest cpu, lowest mem, fewest hops)";

/// `expected WHAT, found TOKEN` at the token.
fn expected(t: Token<'_>, what: &str) -> PolicyError {
    PolicyError::new(t.pos, format!("expected {what}, found {}", t.describe()))
}

/// A match line already parsed, to find overlaps.
struct SeenMatch {
    m: Match,
    service: String,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token<'a>>,
    i: usize,
    seen: Vec<SeenMatch>,
}

/// Whether `w` is a decimal number as the language writes it: digits, optionally `.` and more
/// digits.
fn number(w: &str) -> Option<f64> {
    let (int, frac) = match w.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (w, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    w.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A duration in ms (`500ms`, `10s`, `1.5s`, `2m`), not yet range-checked.
fn duration_ms(w: &str) -> Option<f64> {
    let split = w.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = w.split_at(split);
    let factor = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number(n)? * factor)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        match self.toks.get(self.i).or(self.toks.last()) {
            Some(t) => *t,
            None => Token {
                tok: Tok::Eof,
                start: self.src.len(),
                end: self.src.len(),
                pos: Pos { line: 1, col: 1 },
            },
        }
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn at_word(&self, w: &str) -> bool {
        self.peek().tok == Tok::Word(w)
    }

    /// The source of tokens `start..end`, with whatever separated them (whitespace, comments)
    /// shown as one space.
    fn text(&self, start: usize, end: usize) -> String {
        let mut s = String::new();
        let mut prev_end = None;
        for t in self.toks.get(start..end).unwrap_or_default() {
            if prev_end.is_some_and(|e| t.start > e) {
                s.push(' ');
            }
            s.push_str(self.src.get(t.start..t.end).unwrap_or_default());
            prev_end = Some(t.end);
        }
        s
    }

    /// Fails unless the next token ends the item: an item keyword, `}` or the end of the file
    /// (which the service block reports).
    fn end_of_item(&self, what: &str) -> Result<(), PolicyError> {
        let t = self.peek();
        match t.tok {
            Tok::Word(w) if ITEM_KEYWORDS.contains(&w) => Ok(()),
            Tok::RBrace | Tok::Eof => Ok(()),
            _ => Err(expected(t, what)),
        }
    }

    fn name_word(t: Token<'_>, what: &str, letter_first: bool) -> Result<String, PolicyError> {
        match t.tok {
            Tok::Word(w) if !letter_first || w.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                if w.len() > MAX_NAME_LEN {
                    Err(PolicyError::new(
                        t.pos,
                        format!("name {w:?} is too long (at most {MAX_NAME_LEN} characters)"),
                    ))
                } else {
                    Ok(w.to_string())
                }
            }
            _ => Err(expected(t, what)),
        }
    }

    fn service(&mut self, before: &[Service]) -> Result<Service, PolicyError> {
        self.bump(); // `service`
        let name_tok = self.bump();
        let name = Self::name_word(name_tok, "a service name (a letter, then letters, digits, _ . -)", true)?;
        if let Some(prev) = before.iter().find(|s| s.name == name) {
            return Err(PolicyError::new(
                name_tok.pos,
                format!("duplicate service {name:?} (first defined at {})", prev.at),
            ));
        }
        let open = self.bump();
        if open.tok != Tok::LBrace {
            return Err(expected(open, "`{` after the service name"));
        }
        let mut matches = Vec::new();
        let mut rules = Vec::new();
        let mut fallback: Option<(Fallback, Pos)> = None;
        let mut hold: Option<(u64, Pos)> = None;
        let mut vip: Option<(Ipv4Addr, Pos)> = None;
        let close = loop {
            let t = self.peek();
            match t.tok {
                Tok::RBrace => break self.bump(),
                Tok::Word("match") => {
                    let m = self.match_line(&name, &mut vip)?;
                    matches.push(m);
                }
                Tok::Word("place") => {
                    if let Some((_, at)) = &fallback {
                        return Err(PolicyError::new(
                            t.pos,
                            format!("`place` rules go before `otherwise` (at {at})"),
                        ));
                    }
                    rules.push(self.rule()?);
                }
                Tok::Word("otherwise") => {
                    if let Some((_, at)) = &fallback {
                        return Err(PolicyError::new(
                            t.pos,
                            format!("second `otherwise` in service {name} (the first is at {at})"),
                        ));
                    }
                    fallback = Some((self.fallback()?, t.pos));
                }
                Tok::Word("hold") => {
                    if let Some((_, at)) = &hold {
                        return Err(PolicyError::new(
                            t.pos,
                            format!("second `hold` in service {name} (the first is at {at})"),
                        ));
                    }
                    hold = Some((self.hold()?, t.pos));
                }
                Tok::Eof => {
                    return Err(PolicyError::new(
                        t.pos,
                        format!(
                            "expected {ITEMS} to close service {name} (opened at {}), found end of file",
                            open.pos
                        ),
                    ));
                }
                _ => return Err(expected(t, ITEMS)),
            }
        };
        if matches.is_empty() {
            return Err(PolicyError::new(
                close.pos,
                format!("service {name} has no `match` line; add one, e.g. `match udp dport 5060`"),
            ));
        }
        let Some((fallback, fallback_at)) = fallback else {
            return Err(PolicyError::new(
                close.pos,
                format!("service {name} has no `otherwise` line; add one, e.g. `otherwise datacenter`"),
            ));
        };
        Ok(Service {
            name,
            at: name_tok.pos,
            matches,
            rules,
            fallback,
            fallback_at,
            hold_ms: hold.map_or(DEFAULT_HOLD_MS, |(ms, _)| ms),
        })
    }

    /// `match PROTO dport PORT [to VIP]`.
    fn match_line(&mut self, service: &str, vip: &mut Option<(Ipv4Addr, Pos)>) -> Result<Match, PolicyError> {
        let kw = self.bump();
        let p = self.bump();
        let proto = match p.tok {
            Tok::Word("udp") => Proto::Udp,
            Tok::Word("tcp") => Proto::Tcp,
            _ => return Err(expected(p, "a protocol (udp, tcp)")),
        };
        let d = self.bump();
        if d.tok != Tok::Word("dport") {
            return Err(expected(d, "`dport`"));
        }
        let n = self.bump();
        let dport = match n.tok {
            Tok::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => w.parse::<u16>().ok().filter(|p| *p > 0),
            _ => None,
        }
        .ok_or_else(|| expected(n, "a port number (1-65535)"))?;
        let mut to = None;
        if self.at_word("to") {
            self.bump();
            let a = self.bump();
            let addr = match a.tok {
                Tok::Word(w) => w.parse::<Ipv4Addr>().ok(),
                _ => None,
            }
            .ok_or_else(|| expected(a, "an IPv4 address after `to`"))?;
            match vip {
                Some((v, at)) if *v != addr => {
                    return Err(PolicyError::new(
                        a.pos,
                        format!("service {service} already has VIP {v} (at {at}); a service has one VIP"),
                    ));
                }
                Some(_) => {}
                None => *vip = Some((addr, a.pos)),
            }
            to = Some(addr);
            self.end_of_item(NEXT_ITEM)?;
        } else {
            self.end_of_item(&format!("`to` or {NEXT_ITEM}"))?;
        }
        let m = Match {
            proto,
            dport,
            to,
            at: kw.pos,
        };
        // `seen` holds every match line parsed so far, this service's included.
        if let Some(prev) = self.seen.iter().find(|s| {
            s.m.proto == m.proto && s.m.dport == m.dport && (s.m.to == m.to || s.m.to.is_none() || m.to.is_none())
        }) {
            return Err(PolicyError::new(
                kw.pos,
                format!(
                    "`match {m}` overlaps `match {}` of service {} (at {})",
                    prev.m, prev.service, prev.m.at
                ),
            ));
        }
        self.seen.push(SeenMatch {
            m,
            service: service.to_string(),
        });
        Ok(m)
    }

    /// `place TARGET when COND [prefer ...]`.
    fn rule(&mut self) -> Result<Rule, PolicyError> {
        let start = self.i;
        let kw = self.bump();
        let t = self.bump();
        let target = match t.tok {
            Tok::Word("local") => Target::Local,
            Tok::Word("nearby") => {
                let w = self.bump();
                if w.tok != Tok::Word("within") {
                    return Err(expected(w, "`within` after `nearby`"));
                }
                let n = self.bump();
                let within_hops = match n.tok {
                    Tok::Word(w) if w.bytes().all(|b| b.is_ascii_digit()) => match w.parse::<u32>() {
                        Ok(h) if (1..=MAX_HOPS).contains(&h) => h,
                        _ => {
                            return Err(PolicyError::new(
                                n.pos,
                                format!("hop count {w} is out of range (1-{MAX_HOPS})"),
                            ));
                        }
                    },
                    _ => return Err(expected(n, &format!("a hop count (1-{MAX_HOPS})"))),
                };
                let h = self.bump();
                if !matches!(h.tok, Tok::Word("hops" | "hop")) {
                    return Err(expected(h, "`hops` after the hop count"));
                }
                Target::Nearby { within_hops }
            }
            Tok::Word("at") => {
                let n = self.bump();
                Target::At(Self::name_word(n, "a router name after `at`", false)?)
            }
            _ => return Err(expected(t, "a placement target (local, nearby, at)")),
        };
        let w = self.bump();
        if w.tok != Tok::Word("when") {
            return Err(expected(w, "`when` and a condition"));
        }
        let when = self.or_expr(0)?;
        let nearby = matches!(target, Target::Nearby { .. });
        let mut prefer = None;
        if self.at_word("prefer") {
            let p = self.bump();
            if !nearby {
                return Err(PolicyError::new(p.pos, "`prefer` only applies to `place nearby`"));
            }
            prefer = Some(self.prefer()?);
            self.end_of_item(NEXT_ITEM)?;
        } else if nearby {
            self.end_of_item(&format!("`and`, `or`, `prefer` or {NEXT_ITEM}"))?;
        } else {
            self.end_of_item(&format!("`and`, `or` or {NEXT_ITEM}"))?;
        }
        Ok(Rule {
            target,
            when,
            prefer,
            text: self.text(start, self.i),
            at: kw.pos,
        })
    }

    fn prefer(&mut self) -> Result<Prefer, PolicyError> {
        let a = self.bump();
        match a.tok {
            Tok::Word("lowest") => {
                let b = self.bump();
                match b.tok {
                    Tok::Word("latency") => Ok(Prefer::LowestLatency),
                    Tok::Word("cpu") => Ok(Prefer::LowestCpu),
                    Tok::Word("mem") => Ok(Prefer::LowestMem),
                    _ => Err(expected(b, "`latency`, `cpu` or `mem` after `lowest`")),
                }
            }
            Tok::Word("fewest") => {
                let b = self.bump();
                match b.tok {
                    Tok::Word("hops") => Ok(Prefer::FewestHops),
                    _ => Err(expected(b, "`hops` after `fewest`")),
                }
            }
            _ => Err(expected(a, PREFERENCES)),
        }
    }

    /// `otherwise (datacenter | local | at NAME)`.
    fn fallback(&mut self) -> Result<Fallback, PolicyError> {
        self.bump();
        let t = self.bump();
        let f = match t.tok {
            Tok::Word("datacenter") => Fallback::Datacenter,
            Tok::Word("local") => Fallback::Local,
            Tok::Word("at") => {
                let n = self.bump();
                Fallback::At(Self::name_word(n, "a router name after `at`", false)?)
            }
            _ => return Err(expected(t, "a fallback (datacenter, local, at ROUTER)")),
        };
        self.end_of_item(NEXT_ITEM)?;
        Ok(f)
    }

    /// `hold DURATION`.
    fn hold(&mut self) -> Result<u64, PolicyError> {
        self.bump();
        let t = self.bump();
        let (w, ms) = match t.tok {
            Tok::Word(w) => (w, duration_ms(w)),
            _ => ("", None),
        };
        let ms = ms.ok_or_else(|| expected(t, "a duration (e.g. 500ms, 10s, 2m)"))?;
        if ms > MAX_HOLD_MS as f64 {
            return Err(PolicyError::new(t.pos, format!("hold {w} is too long (at most 60m)")));
        }
        self.end_of_item(NEXT_ITEM)?;
        Ok(ms.round() as u64)
    }

    /// `C or C ...`
    fn or_expr(&mut self, depth: u32) -> Result<Cond, PolicyError> {
        let first = self.and_expr(depth)?;
        if !self.at_word("or") {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.at_word("or") {
            self.bump();
            all.push(self.and_expr(depth)?);
        }
        Ok(Cond::Or(all))
    }

    /// `C and C ...`
    fn and_expr(&mut self, depth: u32) -> Result<Cond, PolicyError> {
        let first = self.unary(depth)?;
        if !self.at_word("and") {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.at_word("and") {
            self.bump();
            all.push(self.unary(depth)?);
        }
        Ok(Cond::And(all))
    }

    /// `not C`, `( C )` or `METRIC OP NUMBER`.
    fn unary(&mut self, depth: u32) -> Result<Cond, PolicyError> {
        let t = self.peek();
        let too_deep = || {
            PolicyError::new(
                t.pos,
                format!("condition nested too deeply (more than {MAX_DEPTH} levels of `not` and parentheses)"),
            )
        };
        match t.tok {
            Tok::Word("not") => {
                if depth >= MAX_DEPTH {
                    return Err(too_deep());
                }
                self.bump();
                Ok(Cond::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::LParen => {
                if depth >= MAX_DEPTH {
                    return Err(too_deep());
                }
                self.bump();
                let c = self.or_expr(depth + 1)?;
                let close = self.bump();
                if close.tok != Tok::RParen {
                    return Err(expected(close, &format!("`)` to close the `(` at {}", t.pos)));
                }
                Ok(c)
            }
            Tok::Word(w) => {
                self.bump();
                let metric = Metric::from_name(w).ok_or_else(|| {
                    let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                    PolicyError::new(
                        t.pos,
                        format!("unknown metric {w:?}; known metrics: {}", known.join(", ")),
                    )
                })?;
                let o = self.bump();
                let Tok::Op(op) = o.tok else {
                    return Err(expected(o, OPERATORS));
                };
                let n = self.bump();
                let value = match n.tok {
                    Tok::Word(w) => number(w),
                    _ => None,
                }
                .ok_or_else(|| expected(n, "a number"))?;
                Ok(Cond::Compare { metric, op, value })
            }
            _ => Err(expected(t, "a condition (a metric, `not` or `(`)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CmpOp;

    const VOIP: &str = "service voip {
  match udp dport 5060 to 10.255.0.10
  place local when mem.used_pct < 30 and cpu.used_pct < 70
  place nearby within 2 hops when mem.used_pct < 30 prefer lowest latency
  otherwise datacenter
  hold 10s
}
";

    fn cmp(metric: Metric, op: CmpOp, value: f64) -> Cond {
        Cond::Compare { metric, op, value }
    }

    /// The error of `src`, as `LINE:COL: message`.
    fn err(src: &str) -> String {
        match parse(src) {
            Ok(p) => panic!("expected an error for {src:?}, parsed {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// `src` wrapped in a service with a match line and a fallback, rules on line 3.
    fn in_service(rules: &str) -> String {
        format!("service s {{\n  match tcp dport 80\n{rules}\n  otherwise datacenter\n}}\n")
    }

    #[test]
    fn the_example_parses() {
        let p = parse(VOIP).unwrap();
        assert_eq!(p.services.len(), 1);
        let s = &p.services[0];
        assert_eq!(s.name, "voip");
        assert_eq!(s.at, Pos { line: 1, col: 9 });
        assert_eq!(
            s.matches,
            vec![Match {
                proto: Proto::Udp,
                dport: 5060,
                to: Some(Ipv4Addr::new(10, 255, 0, 10)),
                at: Pos { line: 2, col: 3 },
            }]
        );
        assert_eq!(s.vip(), Some(Ipv4Addr::new(10, 255, 0, 10)));
        assert_eq!(s.rules.len(), 2);
        assert_eq!(s.rules[0].target, Target::Local);
        assert_eq!(
            s.rules[0].when,
            Cond::And(vec![
                cmp(Metric::MemUsedPct, CmpOp::Lt, 30.0),
                cmp(Metric::CpuUsedPct, CmpOp::Lt, 70.0)
            ])
        );
        assert_eq!(s.rules[0].prefer, None);
        assert_eq!(
            s.rules[0].text,
            "place local when mem.used_pct < 30 and cpu.used_pct < 70"
        );
        assert_eq!(s.rules[1].target, Target::Nearby { within_hops: 2 });
        assert_eq!(s.rules[1].prefer, Some(Prefer::LowestLatency));
        assert_eq!(s.rules[1].at, Pos { line: 4, col: 3 });
        assert_eq!(s.fallback, Fallback::Datacenter);
        assert_eq!(s.fallback_at, Pos { line: 5, col: 3 });
        assert_eq!(s.hold_ms, 10_000);
        // The canonical text is the example itself.
        assert_eq!(p.to_string(), VOIP);
    }

    #[test]
    fn other_valid_forms() {
        let src = "# two services
service web {   # comment after the brace
  match tcp dport 80 to 10.255.0.20
  match tcp dport 443 to 10.255.0.20
  place at fog-2 when (cpu.free_cores >= 0.5 or mem.free_mib > 256) and not io.pressure > 20.5
  place nearby within 1 hop when latency_ms <= 5 and hops != 0 prefer fewest hops
  place nearby within 3 hops when cpu.pressure == 0 prefer lowest cpu
  otherwise at dc-1
}
service dns { match udp dport 53 otherwise local hold 1.5s
  place nearby within 8 hops
      when mem.pressure < 1   # a comment inside a rule
      prefer lowest mem }
";
        let err = parse(src).unwrap_err();
        // `place` after `otherwise` is refused.
        assert_eq!(err.to_string(), "11:3: `place` rules go before `otherwise` (at 10:34)");
        let src = src
            .replace("otherwise local hold 1.5s", "hold 1.5s")
            .replace("mem }", "mem otherwise local }");
        let p = parse(&src).unwrap();
        let web = p.service("web").unwrap();
        assert_eq!(web.matches.len(), 2);
        assert_eq!(web.rules[0].target, Target::At("fog-2".into()));
        assert_eq!(
            web.rules[0].when,
            Cond::And(vec![
                Cond::Or(vec![
                    cmp(Metric::CpuFreeCores, CmpOp::Ge, 0.5),
                    cmp(Metric::MemFreeMib, CmpOp::Gt, 256.0)
                ]),
                Cond::Not(Box::new(cmp(Metric::IoPressure, CmpOp::Gt, 20.5))),
            ])
        );
        assert_eq!(web.rules[1].target, Target::Nearby { within_hops: 1 });
        assert_eq!(web.rules[1].prefer, Some(Prefer::FewestHops));
        assert_eq!(web.rules[2].prefer, Some(Prefer::LowestCpu));
        assert_eq!(web.fallback, Fallback::At("dc-1".into()));
        assert_eq!(web.hold_ms, DEFAULT_HOLD_MS);
        let dns = p.service("dns").unwrap();
        assert_eq!(dns.vip(), None);
        assert_eq!(dns.hold_ms, 1500);
        assert_eq!(dns.fallback, Fallback::Local);
        assert_eq!(
            dns.rules[0].text,
            "place nearby within 8 hops when mem.pressure < 1 prefer lowest mem"
        );
        // Canonical text round-trips.
        let again = parse(&p.to_string()).unwrap();
        assert_eq!(again.to_string(), p.to_string());
        assert_eq!(
            again.service("web").unwrap().rules[0].to_string(),
            "place at fog-2 when (cpu.free_cores >= 0.5 or mem.free_mib > 256) and not io.pressure > 20.5"
        );
    }

    #[test]
    fn precedence_not_and_or() {
        let p = parse(&in_service("  place local when not hops < 1 and hops < 2 or hops < 3")).unwrap();
        assert_eq!(
            p.services[0].rules[0].when,
            Cond::Or(vec![
                Cond::And(vec![
                    Cond::Not(Box::new(cmp(Metric::Hops, CmpOp::Lt, 1.0))),
                    cmp(Metric::Hops, CmpOp::Lt, 2.0)
                ]),
                cmp(Metric::Hops, CmpOp::Lt, 3.0),
            ])
        );
        let p = parse(&in_service(
            "  place local when not (hops < 1 or hops < 2) and (hops < 3 and hops < 4)",
        ))
        .unwrap();
        assert_eq!(
            p.services[0].rules[0].when.to_string(),
            "not (hops < 1 or hops < 2) and (hops < 3 and hops < 4)"
        );
    }

    #[test]
    fn hold_units() {
        for (w, ms) in [
            ("0ms", 0),
            ("500ms", 500),
            ("10s", 10_000),
            ("2m", 120_000),
            ("0.5s", 500),
            ("60m", 3_600_000),
        ] {
            let src = format!("service s {{ match tcp dport 1 otherwise local hold {w} }}");
            assert_eq!(parse(&src).unwrap().services[0].hold_ms, ms, "{w}");
        }
    }

    #[test]
    fn every_error_message() {
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "1:1: expected `service`, found end of file"),
            ("# only a comment\n".into(), "2:1: expected `service`, found end of file"),
            ("servce voip {}".into(), "1:1: expected `service`, found \"servce\""),
            ("service {".into(), "1:9: expected a service name (a letter, then letters, digits, _ . -), found \"{\""),
            ("service 5060 {".into(), "1:9: expected a service name (a letter, then letters, digits, _ . -), found \"5060\""),
            (format!("service {} {{", "a".repeat(65)), "1:9: name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is too long (at most 64 characters)"),
            ("service voip\n  match".into(), "2:3: expected `{` after the service name, found \"match\""),
            ("service voip {\n  match udp dport 5060\n".into(), "3:1: expected `match`, `place`, `otherwise`, `hold` or `}` to close service voip (opened at 1:14), found end of file"),
            ("service voip {\n  plcae local\n}".into(), "2:3: expected `match`, `place`, `otherwise`, `hold` or `}`, found \"plcae\""),
            ("service voip {\n  match sctp dport 5060\n}".into(), "2:9: expected a protocol (udp, tcp), found \"sctp\""),
            ("service voip {\n  match udp port 5060\n}".into(), "2:13: expected `dport`, found \"port\""),
            ("service voip {\n  match udp dport 70000\n}".into(), "2:19: expected a port number (1-65535), found \"70000\""),
            ("service voip {\n  match udp dport 0\n}".into(), "2:19: expected a port number (1-65535), found \"0\""),
            ("service voip {\n  match udp dport 5060 to 10.255.0\n}".into(), "2:27: expected an IPv4 address after `to`, found \"10.255.0\""),
            ("service voip {\n  match udp dport 5060 from 10.0.0.1\n}".into(), "2:24: expected `to` or the next item (`match`, `place`, `otherwise`, `hold` or `}`), found \"from\""),
            ("service voip {\n  match udp dport 5060 to 10.255.0.10\n  match tcp dport 5060 to 10.255.0.11\n}".into(), "3:27: service voip already has VIP 10.255.0.10 (at 2:27); a service has one VIP"),
            ("service voip {\n  match udp dport 5060\n  match udp dport 5060\n}".into(), "3:3: `match udp dport 5060` overlaps `match udp dport 5060` of service voip (at 2:3)"),
            ("service a { match udp dport 5060 to 10.255.0.1 otherwise local }\nservice b {\n  match udp dport 5060\n}".into(), "3:3: `match udp dport 5060` overlaps `match udp dport 5060 to 10.255.0.1` of service a (at 1:13)"),
            ("service a { match udp dport 1 otherwise local }\nservice a { match udp dport 2 otherwise local }".into(), "2:9: duplicate service \"a\" (first defined at 1:9)"),
            ("service voip {\n  place local when hops < 1\n}".into(), "3:1: service voip has no `match` line; add one, e.g. `match udp dport 5060`"),
            ("service voip {\n  match udp dport 5060\n  place local when hops < 1\n}".into(), "4:1: service voip has no `otherwise` line; add one, e.g. `otherwise datacenter`"),
            ("service voip {\n  match udp dport 5060\n  otherwise local\n  otherwise datacenter\n}".into(), "4:3: second `otherwise` in service voip (the first is at 3:3)"),
            ("service voip {\n  match udp dport 5060\n  otherwise somewhere\n}".into(), "3:13: expected a fallback (datacenter, local, at ROUTER), found \"somewhere\""),
            ("service voip {\n  match udp dport 5060\n  otherwise datacenter please\n}".into(), "3:24: expected the next item (`match`, `place`, `otherwise`, `hold` or `}`), found \"please\""),
            ("service voip {\n  match udp dport 5060\n  otherwise at {\n}".into(), "3:16: expected a router name after `at`, found \"{\""),
            ("service voip {\n  match udp dport 5060\n  otherwise local\n  hold 10\n}".into(), "4:8: expected a duration (e.g. 500ms, 10s, 2m), found \"10\""),
            ("service voip {\n  match udp dport 5060\n  otherwise local\n  hold 2h\n}".into(), "4:8: expected a duration (e.g. 500ms, 10s, 2m), found \"2h\""),
            ("service voip {\n  match udp dport 5060\n  otherwise local\n  hold 61m\n}".into(), "4:8: hold 61m is too long (at most 60m)"),
            ("service voip {\n  match udp dport 5060\n  otherwise local\n  hold 1s\n  hold 2s\n}".into(), "5:3: second `hold` in service voip (the first is at 4:3)"),
            (in_service("  place here when hops < 1"), "3:9: expected a placement target (local, nearby, at), found \"here\""),
            (in_service("  place nearby 2 hops when hops < 1"), "3:16: expected `within` after `nearby`, found \"2\""),
            (in_service("  place nearby within two hops when hops < 1"), "3:23: expected a hop count (1-8), found \"two\""),
            (in_service("  place nearby within 9 hops when hops < 1"), "3:23: hop count 9 is out of range (1-8)"),
            (in_service("  place nearby within 0 hops when hops < 1"), "3:23: hop count 0 is out of range (1-8)"),
            (in_service("  place nearby within 2 routers when hops < 1"), "3:25: expected `hops` after the hop count, found \"routers\""),
            (in_service("  place local if hops < 1"), "3:15: expected `when` and a condition, found \"if\""),
            (in_service("  place local when mem.used_pct lt 30"), "3:33: expected a comparison operator (<, <=, >, >=, ==, !=), found \"lt\""),
            (in_service("  place local when mem.used_pct = 30"), "3:33: expected a comparison operator (<, <=, >, >=, ==, !=), found \"=\""),
            (in_service("  place local when mem.used < 30"), "3:20: unknown metric \"mem.used\"; known metrics: cpu.used_pct, mem.used_pct, cpu.free_cores, mem.free_mib, cpu.pressure, mem.pressure, io.pressure, latency_ms, hops"),
            (in_service("  place local when mem.used_pct < thirty"), "3:35: expected a number, found \"thirty\""),
            (in_service("  place local when mem.used_pct < 1.2.3"), "3:35: expected a number, found \"1.2.3\""),
            (in_service("  place local when mem.used_pct < -1"), "3:35: expected a number, found \"-\""),
            (in_service("  place local when (hops < 1"), "4:3: expected `)` to close the `(` at 3:20, found \"otherwise\""),
            (in_service("  place local when )"), "3:20: expected a condition (a metric, `not` or `(`), found \")\""),
            (in_service("  place local when hops < 1 andd hops < 2"), "3:29: expected `and`, `or` or the next item (`match`, `place`, `otherwise`, `hold` or `}`), found \"andd\""),
            (in_service("  place nearby within 1 hop when hops < 1 )"), "3:43: expected `and`, `or`, `prefer` or the next item (`match`, `place`, `otherwise`, `hold` or `}`), found \")\""),
            (in_service("  place local when hops < 1 prefer lowest latency"), "3:29: `prefer` only applies to `place nearby`"),
            (in_service("  place nearby within 1 hop when hops < 1 prefer highest cpu"), "3:50: expected a preference (lowest latency, lowest cpu, lowest mem, fewest hops), found \"highest\""),
            (in_service("  place nearby within 1 hop when hops < 1 prefer lowest disk"), "3:57: expected `latency`, `cpu` or `mem` after `lowest`, found \"disk\""),
            (in_service("  place nearby within 1 hop when hops < 1 prefer fewest routers"), "3:57: expected `hops` after `fewest`, found \"routers\""),
            (in_service("  place local when hops < 1 @"), "3:29: expected `and`, `or` or the next item (`match`, `place`, `otherwise`, `hold` or `}`), found \"@\""),
            (in_service(&format!("  place local when {}hops < 1", "not ".repeat(40))), "3:148: condition nested too deeply (more than 32 levels of `not` and parentheses)"),
            ("service a { match udp dport 1 otherwise local }\nplace".into(), "2:1: expected `service`, found \"place\""),
        ];
        let mut wrong = Vec::new();
        for (src, want) in cases {
            let got = err(&src);
            if got != want {
                wrong.push(format!("source:\n{src}\n  want: {want}\n   got: {got}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn deep_parentheses_are_an_error_not_a_crash() {
        let src = in_service(&format!(
            "  place local when {}hops < 1{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        ));
        assert!(err(&src).contains("nested too deeply"));
    }

    #[test]
    fn check_services() {
        let p = parse(VOIP).unwrap();
        assert_eq!(p.check_services(&["web", "voip"]), Ok(()));
        assert_eq!(
            p.check_services(&["web", "dns"]).unwrap_err().to_string(),
            "1:9: unknown service \"voip\"; known services: dns, web"
        );
        assert_eq!(
            p.check_services(&[]).unwrap_err().to_string(),
            "1:9: unknown service \"voip\"; no services are known"
        );
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(number("30"), Some(30.0));
        assert_eq!(number("12.5"), Some(12.5));
        for bad in ["", ".5", "5.", "1e3", "inf", "NaN", "1.2.3", "-1", "0x10"] {
            assert_eq!(number(bad), None, "{bad}");
        }
        assert_eq!(duration_ms("10s"), Some(10_000.0));
        assert_eq!(duration_ms("10"), None);
        assert_eq!(duration_ms("s"), None);
        assert_eq!(duration_ms("10h"), None);
    }
}
