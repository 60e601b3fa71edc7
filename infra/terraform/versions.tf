terraform {
  required_version = ">= 1.9"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.81"
    }
  }
}

provider "azurerm" {
  features {}
  # The storage account refuses shared keys, so the provider must use Entra ID for blob calls.
  storage_use_azuread = true
}
