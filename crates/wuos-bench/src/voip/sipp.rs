//! SIPp's files, parsed: its statistics CSV (`-trace_stat`: one row per `-fd` period with
//! cumulative counters — successful and failed calls, retransmissions, calls in flight) and its
//! response-time CSV (`-trace_rtt`: one row per call, INVITE → 200 OK); and its built-in
//! scenarios made tolerant of reordering ([`write_reorder_tolerant`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One row of SIPp's statistics: when, and the cumulative counters then.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatRow {
    /// Unix time of the row, ms.
    pub at_ms: f64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    /// Calls in progress at that moment.
    pub current: u64,
}

/// A statistics file: when SIPp started (Unix ms) and its rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub start_ms: Option<f64>,
    pub rows: Vec<StatRow>,
}

/// SIPp writes times as `2026-11-21\t16:43:55.119533\t1795279435.119533`: the last field is Unix
/// seconds.
fn unix_ms(field: &str) -> Option<f64> {
    field
        .rsplit('\t')
        .next()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|t| t * 1000.0)
}

impl Stats {
    /// Parses the text of a `-trace_stat` file; rows that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Self::default();
        };
        let cols: Vec<&str> = header.split(';').collect();
        let col = |name: &str| cols.iter().position(|c| *c == name);
        let (Some(start), Some(now), Some(ok), Some(failed), Some(retrans), Some(current)) = (
            col("StartTime"),
            col("CurrentTime"),
            col("SuccessfulCall(C)"),
            col("FailedCall(C)"),
            col("Retransmissions(C)"),
            col("CurrentCall"),
        ) else {
            return Self::default();
        };
        let mut stats = Self::default();
        for l in lines {
            let f: Vec<&str> = l.split(';').collect();
            let num = |i: usize| f.get(i)?.trim().parse::<u64>().ok();
            stats.start_ms = stats.start_ms.or_else(|| unix_ms(f.get(start)?));
            let row = (|| {
                Some(StatRow {
                    at_ms: unix_ms(f.get(now)?)?,
                    successful: num(ok)?,
                    failed: num(failed)?,
                    retransmissions: num(retrans)?,
                    current: num(current)?,
                })
            })();
            stats.rows.extend(row);
        }
        stats
    }

    /// Reads `path`; an absent file is an empty one.
    pub fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// The counters at `t_ms`: the last row at or before it (zeros before the first).
    pub fn at(&self, t_ms: f64) -> StatRow {
        self.rows
            .iter()
            .take_while(|r| r.at_ms <= t_ms)
            .last()
            .copied()
            .unwrap_or_default()
    }

    /// The growth of the counters between `from_ms` and `to_ms`; `current` is the value at
    /// `from_ms` (calls in flight when the interval began).
    pub fn between(&self, from_ms: f64, to_ms: f64) -> StatRow {
        let (a, b) = (self.at(from_ms), self.at(to_ms));
        StatRow {
            at_ms: to_ms,
            successful: b.successful.saturating_sub(a.successful),
            failed: b.failed.saturating_sub(a.failed),
            retransmissions: b.retransmissions.saturating_sub(a.retransmissions),
            current: a.current,
        }
    }

    /// The last row (the totals).
    pub fn last(&self) -> StatRow {
        self.rows.last().copied().unwrap_or_default()
    }
}

/// One call's setup: when SIPp recorded it (its 200 OK, Unix ms) and INVITE → 200 OK (ms).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Setup {
    pub at_ms: f64,
    pub ms: f64,
}

/// Parses a `-trace_rtt` file (`Date_ms;response_time_ms;rtd_no`, dates relative to SIPp's
/// start, which `start_unix_ms` gives).
pub fn parse_rtt(text: &str, start_unix_ms: f64) -> Vec<Setup> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(';');
            let at: f64 = f.next()?.trim().parse().ok()?;
            let ms: f64 = f.next()?.trim().parse().ok()?;
            Some(Setup {
                at_ms: start_unix_ms + at,
                ms,
            })
        })
        .collect()
}

/// The `-trace_rtt` file SIPp wrote in `dir` (`*_rtt.csv`), parsed.
pub fn read_rtt(dir: &Path, start_unix_ms: f64) -> Vec<Setup> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
        .map_or_else(Vec::new, |f| {
            parse_rtt(&std::fs::read_to_string(f).unwrap_or_default(), start_unix_ms)
        })
}

/// The step of an instrument, read from its values: the smallest gap between two distinct
/// values (SIPp's response times come in ticks of its clock), the values taken to 0.01 ms first
/// (SIPp now and then prints a tick of 60 ms as 59.999). `None` with fewer than two distinct
/// values.
pub fn observed_step(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|x| (x * 1e2).round() / 1e2).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v.windows(2).map(|w| w[1] - w[0]).reduce(f64::min)
}

/// Inserts `attr` into the tag that begins at `at` (before its closing `>`).
fn add_attr(text: &mut String, at: usize, attr: &str) -> Result<()> {
    let end = at + text[at..].find('>').context("a tag without its end")?;
    text.insert_str(end, &format!(" {attr}"));
    Ok(())
}

/// Where `needle` is in `text`, or an error naming the scenario.
fn find(text: &str, needle: &str, scenario: &str) -> Result<usize> {
    match text.find(needle) {
        Some(i) => Ok(i),
        None => bail!("SIPp's built-in {scenario} scenario has no {needle:?}: cannot make it tolerant of reordering"),
    }
}

/// SIPp's built-in `uac` scenario (the text `sipp -sd uac` prints) with transactions: the INVITE
/// and the BYE start one each, the responses belong to theirs, the ACK acknowledges the INVITE's.
/// SIPp then ignores a provisional response that arrives after the final one (when a path move
/// lets the 200 OK overtake the 180 Ringing sent just before it) and answers a late 200 OK with
/// the ACK again, where the built-in scenario aborts the call on an unexpected message.
pub fn reorder_tolerant_uac(builtin: &str) -> Result<String> {
    let mut t = builtin.to_string();
    let invite = find(&t, "INVITE sip:", "uac")?;
    let send = t[..invite].rfind("<send").context("no <send> before the INVITE")?;
    add_attr(&mut t, send, "start_txn=\"invite\"")?;
    for code in ["100", "180", "183"] {
        let i = find(&t, &format!("<recv response=\"{code}\""), "uac")?;
        add_attr(&mut t, i, "response_txn=\"invite\"")?;
    }
    let ok = find(&t, "<recv response=\"200\"", "uac")?;
    add_attr(&mut t, ok, "response_txn=\"invite\"")?;
    let ack = find(&t, "ACK sip:", "uac")?;
    let send = t[..ack].rfind("<send").context("no <send> before the ACK")?;
    add_attr(&mut t, send, "ack_txn=\"invite\"")?;
    let bye = find(&t, "BYE sip:", "uac")?;
    let send = t[..bye].rfind("<send").context("no <send> before the BYE")?;
    add_attr(&mut t, send, "start_txn=\"bye\"")?;
    let ok = bye
        + t[bye..]
            .find("<recv response=\"200\"")
            .context("no 200 OK after the BYE")?;
    add_attr(&mut t, ok, "response_txn=\"bye\"")?;
    Ok(t)
}

/// SIPp's built-in `uas` scenario (the text `sipp -sd uas` prints) that answers the INVITE with
/// its 200 OK alone, and whose ACK may arrive at any point (`optional="global"`).
///
/// SIPp answers a retransmitted request with the first message it sent after receiving it, and
/// only while that is the one message sent since: after 180 Ringing then 200 OK, a retransmitted
/// INVITE (the caller heard neither) is an unexpected message that aborts the call. With the 200
/// alone it is answered with the 200 again, as an RFC 3261 server transaction would. And a
/// duplicate ACK arriving after the BYE (the caller answers every late 200 OK with one) is no
/// unexpected message either.
pub fn reorder_tolerant_uas(builtin: &str) -> Result<String> {
    let mut t = builtin.to_string();
    let ringing = find(&t, "SIP/2.0 180 Ringing", "uas")?;
    let from = t[..ringing].rfind("<send").context("no <send> before the 180")?;
    let to = ringing + t[ringing..].find("</send>").context("no </send> after the 180")? + "</send>".len();
    t.replace_range(from..to, "");
    let ack = find(&t, "<recv request=\"ACK\"", "uas")?;
    let end = ack + t[ack..].find('>').context("a tag without its end")?;
    let tag = t[ack..end].to_string();
    if !tag.contains("optional=\"true\"") {
        bail!("SIPp's built-in uas scenario's ACK is not optional: {tag}");
    }
    t.replace_range(ack..end, &tag.replace("optional=\"true\"", "optional=\"global\""));
    Ok(t)
}

/// Writes the installed SIPp's `uac` and `uas` scenarios, made tolerant of reordering
/// ([`reorder_tolerant_uac`], [`reorder_tolerant_uas`]), into `dir`; their paths.
pub fn write_reorder_tolerant(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let builtin = |name: &str| -> Result<String> {
        let out = std::process::Command::new("sipp")
            .args(["-sd", name])
            .output()
            .context("cannot run sipp (apt-get install sip-tester)")?;
        // SIPp exits with 99 after printing a scenario: its text is what tells.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.contains("<scenario") {
            bail!(
                "sipp -sd {name} printed no scenario ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    };
    let (uac, uas) = (dir.join("uac.xml"), dir.join("uas.xml"));
    std::fs::write(&uac, reorder_tolerant_uac(&builtin("uac")?)?)?;
    std::fs::write(&uas, reorder_tolerant_uas(&builtin("uas")?)?)?;
    Ok((uac, uas))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of SIPp's built-in scenarios: the tags that are changed, a message each.
    const UAC: &str = "<scenario>\n<send retrans=\"500\">\n<![CDATA[\nINVITE sip:x SIP/2.0\n]]>\n</send>\n\
        <recv response=\"100\"\n optional=\"true\">\n</recv>\n<recv response=\"180\" optional=\"true\">\n</recv>\n\
        <recv response=\"183\" optional=\"true\">\n</recv>\n<recv response=\"200\" rtd=\"true\">\n</recv>\n\
        <send>\n<![CDATA[\nACK sip:x SIP/2.0\n]]>\n</send>\n<pause/>\n\
        <send retrans=\"500\">\n<![CDATA[\nBYE sip:x SIP/2.0\n]]>\n</send>\n<recv response=\"200\" crlf=\"true\">\n</recv>\n</scenario>\n";
    const UAS: &str = "<scenario>\n<recv request=\"INVITE\" crlf=\"true\">\n</recv>\n\
        <send>\n<![CDATA[\nSIP/2.0 180 Ringing\n]]>\n</send>\n<send retrans=\"500\">\n<![CDATA[\nSIP/2.0 200 OK\n]]>\n</send>\n\
        <recv request=\"ACK\"\n optional=\"true\"\n rtd=\"true\">\n</recv>\n<recv request=\"BYE\">\n</recv>\n</scenario>\n";

    #[test]
    fn the_callers_messages_belong_to_their_transactions() {
        let t = reorder_tolerant_uac(UAC).unwrap();
        for tag in [
            "<send retrans=\"500\" start_txn=\"invite\">",
            "<recv response=\"100\"\n optional=\"true\" response_txn=\"invite\">",
            "<recv response=\"180\" optional=\"true\" response_txn=\"invite\">",
            "<recv response=\"183\" optional=\"true\" response_txn=\"invite\">",
            "<recv response=\"200\" rtd=\"true\" response_txn=\"invite\">",
            "<send ack_txn=\"invite\">",
            "<send retrans=\"500\" start_txn=\"bye\">",
            "<recv response=\"200\" crlf=\"true\" response_txn=\"bye\">",
        ] {
            assert_eq!(t.matches(tag).count(), 1, "{tag} in:\n{t}");
        }
        assert!(reorder_tolerant_uac("<scenario></scenario>").is_err());
    }

    #[test]
    fn the_answerer_sends_its_200_alone_and_takes_the_ack_at_any_point() {
        let t = reorder_tolerant_uas(UAS).unwrap();
        assert!(!t.contains("180"), "{t}");
        assert!(
            t.contains("</recv>\n\n<send retrans=\"500\">\n<![CDATA[\nSIP/2.0 200 OK"),
            "the 200 OK is the first message sent after the INVITE: {t}"
        );
        assert!(
            t.contains("<recv request=\"ACK\"\n optional=\"global\"\n rtd=\"true\">"),
            "{t}"
        );
        assert!(!t.contains("optional=\"true\""), "{t}");
        assert!(reorder_tolerant_uas("<send>SIP/2.0 180 Ringing</send><recv request=\"ACK\">").is_err());
    }

    const HEADER: &str = "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;CallRate(P);CallRate(C);IncomingCall(P);IncomingCall(C);OutgoingCall(P);OutgoingCall(C);TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);Retransmissions(P);Retransmissions(C)";

    fn row(t: f64, current: u64, ok: u64, failed: u64, retrans: u64) -> String {
        format!(
            "2026-12-05\t09:27:06.736476\t1796462826.736476;x;2026-12-05\t09:27:08.000000\t{t};00:00:00;00:00:02;5;0;2.4;0;0;0;5;5;{current};0;{ok};0;{failed};0;{retrans}"
        )
    }

    #[test]
    fn statistics_rows_give_counters_by_time() {
        let text = [
            HEADER.to_string(),
            row(1000.0, 3, 0, 0, 0),
            row(1001.0, 5, 2, 0, 1),
            row(1002.0, 4, 6, 1, 4),
            "garbage;row".to_string(),
        ]
        .join("\n");
        let s = Stats::parse(&text);
        assert!((s.start_ms.unwrap() - 1_796_462_826_736.476).abs() < 1e-3, "{s:?}");
        assert_eq!(s.rows.len(), 3, "{s:?}");
        assert_eq!(s.at(999_000.0), StatRow::default(), "before the first row");
        assert_eq!(s.at(1_001_500.0).successful, 2);
        let d = s.between(1_000_500.0, 1_002_000.0);
        assert_eq!((d.successful, d.failed, d.retransmissions, d.current), (6, 1, 4, 3));
        assert_eq!(s.last().retransmissions, 4);
    }

    #[test]
    fn a_file_without_the_columns_is_empty() {
        assert_eq!(Stats::parse("a;b;c\n1;2;3\n"), Stats::default());
        assert_eq!(Stats::parse(""), Stats::default());
    }

    #[test]
    fn response_times_are_placed_in_unix_time() {
        let s = parse_rtt(
            "Date_ms;response_time_ms;rtd_no\n1500.5;124.000000;1\nbad\n2000;4;1\n",
            1e6,
        );
        assert_eq!(
            s,
            vec![
                Setup {
                    at_ms: 1_001_500.5,
                    ms: 124.0
                },
                Setup {
                    at_ms: 1_002_000.0,
                    ms: 4.0
                }
            ]
        );
    }

    #[test]
    fn the_step_is_the_smallest_gap_between_distinct_values() {
        assert_eq!(observed_step(&[124.0, 4.0, 0.0, 4.0, 8.0, 128.0]), Some(4.0));
        assert_eq!(observed_step(&[4.0, 4.0]), None);
        assert_eq!(observed_step(&[8.0, 59.999, 60.0, 64.0]), Some(4.0), "59.999 is 60");
        assert_eq!(observed_step(&[]), None);
    }
}
