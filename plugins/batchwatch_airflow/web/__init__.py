"""The Batchwatch web app the plugin mounts at /batchwatch: pages, JSON API, metrics, all behind Airflow's auth."""
