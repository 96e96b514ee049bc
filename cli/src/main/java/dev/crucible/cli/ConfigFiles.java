package dev.crucible.cli;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.toml.TomlMapper;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** Reads a config file as a nested map: TOML for *.toml, JSON otherwise. */
final class ConfigFiles {
    private ConfigFiles() {}

    static Map<String, Object> read(Path file) {
        if (!Files.isRegularFile(file)) throw new UserException("config file not found: " + file);
        ObjectMapper mapper = file.toString().endsWith(".toml") ? new TomlMapper() : new ObjectMapper();
        try {
            Map<String, Object> m = mapper.readValue(file.toFile(), new TypeReference<>() {});
            if (m == null) throw new UserException(file + ": empty config");
            return m;
        } catch (JacksonException e) {
            throw new UserException(file + ": not valid " + (mapper instanceof TomlMapper ? "TOML" : "JSON") + ": " + e.getOriginalMessage());
        } catch (IOException e) {
            throw new UserException(file + ": cannot read: " + e.getMessage());
        }
    }

    static String toJson(Object value) {
        try {
            return new ObjectMapper().writerWithDefaultPrettyPrinter().writeValueAsString(value);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }
}
