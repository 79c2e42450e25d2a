//! The JUnit XML report: one `<testsuite>` per run, one `<testcase>` per scenario, with the
//! failure reason and the implementation's log tail.

use quick_xml::Writer;
use quick_xml::events::{BytesCData, BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::{RunReport, Verdict};

/// The report as JUnit XML.
pub fn to_junit_xml(report: &RunReport) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let tests = report.outcomes.len().to_string();
    let failures = report.count(Verdict::Fail).to_string();
    let errors = report.count(Verdict::Error).to_string();
    let time = format!("{:.3}", report.duration.as_secs_f64());
    let suite_name = format!("conformance.{}", report.profile);
    let write = |w: &mut Writer<Vec<u8>>, e: Event<'_>| {
        w.write_event(e).expect("writing XML to a Vec cannot fail")
    };

    write(
        &mut w,
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
    );
    let mut suites = BytesStart::new("testsuites");
    suites.push_attribute(("name", "conformance"));
    suites.push_attribute(("tests", tests.as_str()));
    suites.push_attribute(("failures", failures.as_str()));
    suites.push_attribute(("errors", errors.as_str()));
    suites.push_attribute(("time", time.as_str()));
    write(&mut w, Event::Start(suites));
    let mut suite = BytesStart::new("testsuite");
    suite.push_attribute(("name", suite_name.as_str()));
    suite.push_attribute(("tests", tests.as_str()));
    suite.push_attribute(("failures", failures.as_str()));
    suite.push_attribute(("errors", errors.as_str()));
    suite.push_attribute(("time", time.as_str()));
    write(&mut w, Event::Start(suite));

    let mut props = BytesStart::new("properties");
    props.push_attribute(("count", "2"));
    write(&mut w, Event::Start(props));
    for (name, value) in [
        ("implementation", report.implementation.as_str()),
        ("run_id", report.run_id.as_str()),
    ] {
        let mut p = BytesStart::new("property");
        p.push_attribute(("name", name));
        p.push_attribute(("value", value));
        write(&mut w, Event::Empty(p));
    }
    write(&mut w, Event::End(BytesEnd::new("properties")));

    for o in &report.outcomes {
        let mut case = BytesStart::new("testcase");
        let time = format!("{:.3}", o.duration.as_secs_f64());
        let classname = format!("{suite_name}.{}", o.requirement.name());
        case.push_attribute(("classname", classname.as_str()));
        case.push_attribute(("name", o.scenario.as_str()));
        case.push_attribute(("time", time.as_str()));
        write(&mut w, Event::Start(case));
        if o.verdict != Verdict::Pass {
            let tag = if o.verdict == Verdict::Fail {
                "failure"
            } else {
                "error"
            };
            let reason = o.reason.clone().unwrap_or_default();
            let mut f = BytesStart::new(tag);
            f.push_attribute(("message", reason.lines().next().unwrap_or("")));
            write(&mut w, Event::Start(f));
            write(&mut w, Event::Text(BytesText::new(&reason)));
            write(&mut w, Event::End(BytesEnd::new(tag)));
        }
        if !o.log_tail.is_empty() {
            write(&mut w, Event::Start(BytesStart::new("system-out")));
            // "]]>" cannot appear inside one CDATA section: split it across two.
            let parts: Vec<&str> = o.log_tail.split("]]>").collect();
            for (i, part) in parts.iter().enumerate() {
                let head = if i > 0 { ">" } else { "" };
                let tail = if i + 1 < parts.len() { "]]" } else { "" };
                let text = format!("{head}{part}{tail}");
                write(&mut w, Event::CData(BytesCData::new(text)));
            }
            write(&mut w, Event::End(BytesEnd::new("system-out")));
        }
        write(&mut w, Event::End(BytesEnd::new("testcase")));
    }
    write(&mut w, Event::End(BytesEnd::new("testsuite")));
    write(&mut w, Event::End(BytesEnd::new("testsuites")));
    let mut text = String::from_utf8(w.into_inner()).expect("the XML is UTF-8");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn junit_counts_and_escapes() {
        let xml = super::to_junit_xml(&super::super::sample());
        assert!(xml.contains(r#"tests="2" failures="1" errors="0""#));
        assert!(
            xml.contains(
                r#"<testcase classname="conformance.gatehouse.required" name="handshake""#
            )
        );
        assert!(xml.contains("no IDENTIFY within 30s &lt;&amp;&gt;"));
        // the log tail survives, "]]>" included, when the CDATA sections are read back
        let mut reader = quick_xml::Reader::from_str(&xml);
        let mut cdata = String::new();
        loop {
            match reader.read_event().unwrap() {
                quick_xml::events::Event::CData(c) => {
                    cdata.push_str(std::str::from_utf8(&c.into_inner()).unwrap())
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(cdata, "exited\nwith ]]> inside");
    }
}
