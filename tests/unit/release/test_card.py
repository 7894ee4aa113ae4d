"""The data card's reading of a report: survival-effect fidelity wherever it sits, and known limitations."""

from __future__ import annotations

from fedsynth.experiments.card import effect_fidelity, limitations


def _report() -> dict:  # type: ignore[type-arg]
    rows = [
        # clear in real, same size here: no limitation
        {"endpoint": "OS", "variable": "G1", "log_hr_real": 1.0, "log_hr_synthetic": 0.9, "p_synthetic": 1e-5,
         "significant_real": True, "same_direction": True},
        # clear in real, a third of the size here: weakened
        {"endpoint": "OS", "variable": "G2", "log_hr_real": 1.0, "log_hr_synthetic": 0.3, "p_synthetic": 0.2,
         "significant_real": True, "same_direction": True},
        # clearly the other way: reversed
        {"endpoint": "OS", "variable": "AGE", "log_hr_real": 0.02, "log_hr_synthetic": -0.03, "p_synthetic": 0.001,
         "significant_real": True, "same_direction": False},
        # not significant in the real data: not judged
        {"endpoint": "OS", "variable": "G3", "log_hr_real": 0.1, "log_hr_synthetic": -0.5, "p_synthetic": 0.001,
         "significant_real": False, "same_direction": False},
    ]
    return {
        "fidelity": {"columns": {"HB": {"similarity": 0.95}, "PLT": {"similarity": 0.85}}},
        "survival": {"endpoint_names": ["OS"], "hazard_ratios": {"rows": rows},
                     "OS": {"strata": {"G1": {"groups": {"0": {"curve_similarity": 0.97},
                                                         "1": {"curve_similarity": 0.8}}}}}},
    }


def test_limitations_name_poor_columns_strata_and_weakened_or_reversed_effects() -> None:
    # Run
    found = limitations(_report())
    # Assert
    assert found == [
        "Columns whose values are distributed unlike the real ones (similarity of 1): PLT (0.85).",
        "OS survival curves differ from the real ones for patients with G1 = 1 (0.80) (curve similarity of 1).",
        "1 of the 3 clear effects on OS in the real cohort are reversed here (clearly the other way): AGE.",
        ("1 of the 3 clear effects on OS in the real cohort are less than half as strong here (log hazard ratio), "
         "or point the other way without being clear: G2."),
    ]


def test_survival_effect_fidelity_is_read_where_the_report_puts_it_or_left_undefined() -> None:
    assert effect_fidelity(_report()) is None
    assert effect_fidelity({"scores": {"survival_effect_fidelity": {"value": 0.71}}}) == 0.71
    assert effect_fidelity({"survival": {"effect_fidelity": 0.64}}) == 0.64
    assert effect_fidelity({"survival_effects": {"survival_effect_fidelity": {"value": 0.5}}}) == 0.5


def test_the_card_states_the_epsilon_a_run_spent_and_says_none_without_a_budget() -> None:
    # Setup: the privacy block a DP run writes into its manifest, and the one a run without a budget writes
    from fedsynth.experiments.card import _epsilon_statement

    dp_manifest = {"privacy": {"budget": {"epsilon": 1.0, "delta": 1e-5}, "epsilon_spent": 0.9999,
                               "accountant": "RDP composition"}}
    plain_manifest = {"privacy": {"budget": None, "note": "no privacy block"}}

    # Run
    stated = _epsilon_statement(dp_manifest)

    # Assert
    assert stated is not None
    text, spent = stated
    assert spent == 0.9999 and "(1, 1e-05) spent of a budget of epsilon 1 " in text
    assert _epsilon_statement(plain_manifest) is None and _epsilon_statement({}) is None


def test_a_below_chance_c_index_is_a_known_limitation_and_codes_reach_the_dictionary() -> None:
    # Setup: a report whose synthetic-trained model is below chance; a schema with a coded event column
    import pandas as pd

    from fedsynth.cohort.schema import TableSchema
    from fedsynth.experiments.card import limitations
    from fedsynth.experiments.dictionary import data_dictionary

    report = {"utility": {"endpoints": {"OS": {"c_index_train_synthetic": 0.41, "c_index_train_real": 0.7},
                                        "EFS": {"c_index_train_synthetic": 0.66, "c_index_train_real": 0.7}}}}
    schema = TableSchema.from_dict({
        "columns": [
            {"name": "os_months", "kind": "continuous", "role": "outcome"},
            {"name": "os_status", "kind": "binary", "role": "outcome", "codes": {"Dead": 1, "Alive": 0}},
            {"name": "mut_TP53", "kind": "binary", "role": "genomic"},
        ],
        "endpoints": [{"name": "OS", "duration_col": "os_months", "event_col": "os_status", "time_unit": "months"}],
    })
    data = pd.DataFrame({"os_months": [1.0, 2.0], "os_status": [1, 0], "mut_TP53": [0, 1]})

    # Run
    found = limitations(report)
    dictionary = {d["column"]: d for d in data_dictionary(data, schema)}

    # Assert
    assert len(found) == 1 and "OS" in found[0] and "0.41" in found[0]
    assert dictionary["os_status"]["categories"] == ["0 = Alive", "1 = Dead"]
    assert dictionary["os_status"]["meaning"].startswith("OS: 1 = the event happened")
    assert dictionary["os_months"]["unit"] == "months" and "time from baseline" in dictionary["os_months"]["meaning"]
    assert dictionary["mut_TP53"]["meaning"] == "mutation status of mut_TP53: 1 = mutated, 0 = not mutated"
