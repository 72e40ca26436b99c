-- Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
-- one database per Pushwarden service, since no service reads another's tables.
CREATE DATABASE consent;
CREATE DATABASE segmentation;
CREATE DATABASE scheduler;
CREATE DATABASE delivery;
