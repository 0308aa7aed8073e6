"""The event and trace formats: schema, writers, readers, conversion, transforms, importers."""
