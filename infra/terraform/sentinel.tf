# What SOC hunters and MDE admins read: the workbook and the analytics rule on the findings.

resource "azurerm_sentinel_log_analytics_workspace_onboarding" "sentinel" {
  count        = var.onboard_sentinel ? 1 : 0
  workspace_id = data.azurerm_log_analytics_workspace.sentinel.id
}

resource "azurerm_application_insights_workbook" "telemetry" {
  name                = uuidv5("url", "${data.azurerm_log_analytics_workspace.sentinel.id}/telemetry-hunt-workbook")
  location            = local.location
  resource_group_name = var.resource_group_name
  display_name        = "Defender for Endpoint telemetry (telemetry-hunt)"
  category            = "sentinel"
  source_id           = lower(data.azurerm_log_analytics_workspace.sentinel.id)
  data_json           = file("${path.module}/../workbook/telemetry-hunt.workbook.json")
}

resource "azurerm_sentinel_alert_rule_scheduled" "findings" {
  name                       = "telemetry-hunt-findings"
  log_analytics_workspace_id = data.azurerm_log_analytics_workspace.sentinel.id
  display_name               = "Defender for Endpoint telemetry: new finding"
  description                = "A finding of the nightly telemetry-hunt job (unexpected process, lookalike host, unusual port, volume anomaly, silent devices) on the channel between Defender for Endpoint sensors and their cloud."
  enabled                    = var.rule_enabled
  query                      = file("${path.module}/../sentinel/findings-rule.kql")
  query_frequency            = "P1D"
  query_period               = "P3D"
  severity                   = "Medium"
  trigger_operator           = "GreaterThan"
  trigger_threshold          = 0
  suppression_enabled        = false
  suppression_duration       = "PT5H"
  tactics                    = ["CommandAndControl", "Exfiltration", "DefenseEvasion"]
  techniques                 = ["T1071", "T1567", "T1562"]

  event_grouping {
    aggregation_method = "AlertPerResult"
  }

  alert_details_override {
    display_name_format  = "MDE telemetry: {{FindingType}} on {{RemoteHost}}"
    description_format   = "{{Description}}"
    severity_column_name = "Severity"
  }

  custom_details = {
    FindingId   = "FindingId"
    FindingType = "FindingType"
    DeviceCount = "DeviceCount"
    Score       = "Score"
    EvidenceUri = "EvidenceUri"
  }

  entity_mapping {
    entity_type = "Host"
    field_mapping {
      identifier  = "HostName"
      column_name = "HostName"
    }
  }

  entity_mapping {
    entity_type = "Process"
    field_mapping {
      identifier  = "CommandLine"
      column_name = "ProcessPath"
    }
  }

  entity_mapping {
    entity_type = "URL"
    field_mapping {
      identifier  = "Url"
      column_name = "RemoteHost"
    }
  }

  incident {
    create_incident_enabled = true
    grouping {
      enabled                 = true
      reopen_closed_incidents = false
      lookback_duration       = "P1D"
      entity_matching_method  = "Selected"
      by_custom_details       = ["FindingType"]
    }
  }

  depends_on = [
    azurerm_sentinel_log_analytics_workspace_onboarding.sentinel,
    azurerm_log_analytics_workspace_table_custom_log.results,
  ]
}
