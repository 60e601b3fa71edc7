//! **Series anomaly**: a day on which the reference query's numbers (distinct devices per
//! ActionType, `MdeTelemetryDaily`) leave their usual range, up or down.
//!
//! Why: this is the picture the reference query draws, and its breaks are the fleet-wide
//! events: a drop in `ConnectionSuccess` devices or a jump in `ConnectionFailed` devices means
//! sensors are being blocked or silenced (or a proxy broke); a jump in successes, an onboarding
//! wave. Scored exactly like KQL
//! `series_decompose_anomalies(series, threshold, 7, 'avg', 1)`: weekly seasonality (per-phase
//! medians) once the series has three weeks, the scored day left out of the fitting, `ctukey`
//! scores; a flag also needs `min_change` devices of difference, so small series stay quiet.
//!
//! Example: 40 devices more than usual fail to reach the gateway on a Wednesday:
//! `ConnectionFailed` is 81 against a baseline of 41, score 9.3 > 3: a `SeriesSpike`.

use serde_json::json;

use super::{Context, Finding, FindingType, Severity};
use crate::baseline::series::decompose_anomalies;
use crate::sink::results::{day_prefix, PART};
use crate::sink::tables::DAILY;

/// The standard deviation of a count of `baseline` devices out of `reporting` by chance alone
/// (binomial), or the Poisson `sqrt(baseline)` when the number reporting is not known.
pub fn sampling_noise(baseline: f64, reporting: f64) -> f64 {
    let b = baseline.max(0.0);
    let share = if reporting > 0.0 && reporting >= b { b / reporting } else { 0.0 };
    (b * (1.0 - share)).sqrt()
}

pub fn detect(ctx: &Context<'_>) -> Vec<Finding> {
    let settings = &ctx.settings.detect.series;
    let history = ctx.history.contiguous_before(ctx.day);
    let n = history.len() + 1;
    if n < settings.min_points {
        return Vec::new();
    }
    let seasonality = if n >= 3 * settings.seasonality { settings.seasonality } else { 0 };
    // Every ActionType of the window: one that is missing today scores as 0 devices, the
    // clearest drop of all.
    let mut actions: Vec<&String> = history.iter().chain([&ctx.today]).flat_map(|d| d.connections.keys()).collect();
    actions.sort();
    actions.dedup();
    let days: Vec<String> = history.iter().map(|d| d.day.to_string()).chain([ctx.day.to_string()]).collect();

    // The devices reporting today bound every count: a count near all of them varies little.
    let reporting = ctx.today.devices.iter().filter(|(_, d)| d.events > 0).count() as f64;
    let mut findings = Vec::new();
    for action in actions {
        let values: Vec<f64> =
            history.iter().chain([&ctx.today]).map(|d| d.connections.get(action).copied().unwrap_or(0.0)).collect();
        let scored = decompose_anomalies(&values, settings.threshold, seasonality, settings.trend, 1);
        let last = n - 1;
        let (observed, baseline, score) = (values[last], scored.baseline[last], scored.scores[last]);
        let noise = sampling_noise(baseline, reporting);
        let needed = settings.min_change.max(settings.noise_sigmas * noise);
        if scored.flags[last] == 0 || (observed - baseline).abs() < needed {
            continue;
        }
        let rise = score > 0.0;
        let (finding_type, direction) =
            if rise { (FindingType::SeriesSpike, 1) } else { (FindingType::SeriesDrop, -1) };
        // Fewer successes or more failures: sensors cut off from their cloud.
        let health = (action == "ConnectionSuccess" && !rise) || (action == "ConnectionFailed" && rise);
        let severity = match (health, score.abs() >= 2.0 * settings.threshold) {
            (true, true) => Severity::High,
            (true, false) => Severity::Medium,
            (false, _) if action == "ConnectionSuccess" => Severity::Informational,
            (false, _) => Severity::Low,
        };
        let (tactics, techniques) = if health { (vec!["DefenseEvasion"], vec!["T1562.001"]) } else { (vec![], vec![]) };
        let what = if rise { "more" } else { "fewer" };
        let description = format!(
            "{observed:.0} devices had `{action}` connections to the reference hosts on {day}, {delta:.0} {what} than \
             the baseline of {baseline:.1} (score {score:.2}, threshold {threshold}): {meaning}",
            day = ctx.day,
            delta = (observed - baseline).abs(),
            threshold = settings.threshold,
            meaning = if health {
                "sensors may be blocked from their cloud (EDR-silencing tools, a firewall or proxy change)."
            } else if rise {
                "more devices than usual (an onboarding wave, a re-enabled group, or traffic that imitates the sensor)."
            } else {
                "fewer devices than usual (devices offline, sensors off-boarded, or traffic moving elsewhere)."
            },
        );
        findings.push(Finding {
            action_type: Some(action.clone()),
            observed: Some(observed),
            baseline: Some(baseline),
            score: Some(score),
            threshold: Some(settings.threshold),
            direction,
            params: json!({
                "seasonality": seasonality,
                "trend": settings.trend_name,
                "testPoints": 1,
                "threshold": settings.threshold,
                "minChange": settings.min_change,
                "noiseSigmas": settings.noise_sigmas,
                "samplingNoise": noise,
                "points": n,
                "table": DAILY,
            })
            .into(),
            series: Some(
                json!({
                    "days": days,
                    "observed": values,
                    "baseline": scored.baseline,
                    "score": scored.scores,
                })
                .into(),
            ),
            description,
            tactics,
            techniques,
            evidence: format!("{}{PART}.jsonl", day_prefix(DAILY, ctx.day)),
            ..Finding::new(ctx, finding_type, action.clone(), severity, "kql-series_decompose_anomalies-ctukey")
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::history::History;
    use crate::detect::testing::{day, day_data, settings};

    /// A weekly pattern (weekends lower) with a little noise, `weeks` long, then `today`.
    fn scored(weeks: usize, failed_today: Option<f64>, success_today: f64) -> Vec<Finding> {
        let settings = settings();
        let mut history = History::new(settings.detect.history_days);
        let week_success = [300.0, 305.0, 298.0, 302.0, 299.0, 120.0, 118.0];
        let week_failed = [40.0, 43.0, 38.0, 41.0, 42.0, 15.0, 14.0];
        let n = weeks * 7;
        for i in 0..n {
            let noise = [0.0, 2.0, -1.0, 1.0, -2.0][i % 5];
            let connections =
                [("ConnectionSuccess", week_success[i % 7] + noise), ("ConnectionFailed", week_failed[i % 7] + noise)];
            let data = day_data(&settings, &mut history.names, day(i as i32 - n as i32), &[], &connections);
            history.push(data, &settings);
        }
        // day(0) is phase n % 7 = 0 of the pattern: a weekday
        let mut connections = vec![("ConnectionSuccess", success_today)];
        connections.extend(failed_today.map(|n| ("ConnectionFailed", n)));
        let today = day_data(&settings, &mut history.names, day(0), &[], &connections);
        detect(&Context::new(day(0), &settings, &today, &history))
    }

    #[test]
    fn a_jump_in_failing_devices_is_a_spike() {
        let findings = scored(4, Some(81.0), 300.0);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.finding_type, FindingType::SeriesSpike);
        assert_eq!(f.action_type.as_deref(), Some("ConnectionFailed"));
        assert_eq!(f.direction, 1);
        assert_eq!(f.observed, Some(81.0));
        assert!(f.score.unwrap() > 3.0 && f.baseline.unwrap() > 38.0 && f.baseline.unwrap() < 44.0, "{f:#?}");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.params.value()["seasonality"], 7);
        assert_eq!(f.series.as_ref().unwrap().value()["observed"].as_array().unwrap().len(), 29);
    }

    #[test]
    fn a_drop_in_successes_is_a_drop_and_missing_action_types_count_as_zero() {
        let findings = scored(4, Some(40.0), 200.0);
        assert_eq!(findings.iter().map(|f| f.finding_type).collect::<Vec<_>>(), [FindingType::SeriesDrop]);
        assert_eq!(findings[0].direction, -1);
        assert_eq!(findings[0].action_type.as_deref(), Some("ConnectionSuccess"));
        assert_eq!(findings[0].severity, Severity::High);
        // no ConnectionFailed row at all today: 0 devices, a drop (not a health signal)
        let findings = scored(4, None, 300.0);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].action_type.as_deref(), Some("ConnectionFailed"));
        assert_eq!((findings[0].observed, findings[0].severity), (Some(0.0), Severity::Low));
    }

    #[test]
    fn near_misses_stay_quiet() {
        // an ordinary weekday
        assert!(scored(4, Some(41.0), 301.0).is_empty());
        // a weekend-sized value on a weekday is a drop, but with only two weeks (no seasonality
        // before three) the series is not scored at all
        assert!(scored(2, Some(41.0), 120.0).is_empty());
    }

    #[test]
    fn small_changes_below_min_change_are_not_reported() {
        // a tiny series: 2 devices a day, then 5: a huge score, but only 3 devices of change
        let settings = settings();
        let mut history = History::new(30);
        for i in 0..28 {
            let data = day_data(
                &settings,
                &mut history.names,
                day(i - 28),
                &[],
                &[("ConnectionRequest", 2.0 + (i % 2) as f64)],
            );
            history.push(data, &settings);
        }
        let today = day_data(&settings, &mut history.names, day(0), &[], &[("ConnectionRequest", 6.0)]);
        let ctx = Context::new(day(0), &settings, &today, &history);
        assert!(detect(&ctx).is_empty());
        let today = day_data(&settings, &mut history.names, day(0), &[], &[("ConnectionRequest", 10.0)]);
        let ctx = Context::new(day(0), &settings, &today, &history);
        assert_eq!(detect(&ctx).len(), 1);
    }

    #[test]
    fn a_count_within_its_own_sampling_noise_is_not_reported() {
        // 20 devices a day, give or take one: KQL flags 30, but 30 is well within what a count
        // of 20 wanders by chance (4 sigma of sqrt(20) is 17.9); 45 is not.
        let settings = settings();
        let mut history = History::new(30);
        for i in 0..28 {
            let data = day_data(
                &settings,
                &mut history.names,
                day(i - 28),
                &[],
                &[("SslConnectionInspected", 20.0 + (i % 3) as f64 - 1.0)],
            );
            history.push(data, &settings);
        }
        for (today_value, reported) in [(30.0, false), (45.0, true)] {
            let today =
                day_data(&settings, &mut history.names, day(0), &[], &[("SslConnectionInspected", today_value)]);
            let ctx = Context::new(day(0), &settings, &today, &history);
            assert_eq!(detect(&ctx).len(), usize::from(reported), "{today_value}");
        }
        assert!((sampling_noise(20.0, 0.0) - 20f64.sqrt()).abs() < 1e-12);
        // 200 of 220 devices: binomial, much narrower than Poisson
        assert!((sampling_noise(200.0, 220.0) - (200.0f64 * 20.0 / 220.0).sqrt()).abs() < 1e-12);
        assert_eq!(sampling_noise(220.0, 220.0), 0.0);
    }
}
